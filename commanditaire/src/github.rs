//! GitHub: looking the four remote repositories up and creating the missing ones (private),
//! through octocrab, before the first push.
//!
//! Calls: `GET /repos/{owner}/{repo}` for each; when one is missing (404), `GET /user` once
//! to learn who the token belongs to, then `POST /user/repos` when the owner is that user,
//! `POST /orgs/{owner}/repos` otherwise.

use std::time::Duration;

use octocrab::Octocrab;
use tasks::layout::REPOSITORIES;

use crate::remote::{GitHubOptions, RemoteError, Target};

/// The name on GitHub of workspace repository `repo`: `<prefix>-<repo>`.
pub fn repository_name(prefix: &str, repo: &str) -> String {
    format!("{prefix}-{repo}")
}

/// Makes sure the four repositories exist on GitHub and returns where to push them.
pub async fn ensure_repositories(gh: &GitHubOptions) -> Result<Vec<Target>, RemoteError> {
    let fail = |what: String, reason: String| RemoteError::GitHub {
        api: crate::remote::redact(&gh.api_url),
        what,
        reason: tasks::amqp::redact_urls_in(&reason),
    };
    let crab = Octocrab::builder()
        .base_uri(gh.api_url.as_str())
        .map_err(|e| fail("reading the API URL".into(), e.to_string()))?
        .personal_token(gh.token.expose().to_string())
        .set_connect_timeout(Some(Duration::from_secs(20)))
        .set_read_timeout(Some(Duration::from_secs(60)))
        .build()
        .map_err(|e| fail("starting the client".into(), e.to_string()))?;
    let mut login: Option<String> = None;
    let mut targets = Vec::with_capacity(REPOSITORIES.len());
    for repo in REPOSITORIES {
        let name = repository_name(&gh.prefix, repo);
        let full = format!("{}/{name}", gh.owner);
        let found = match crab.repos(&gh.owner, &name).get().await {
            Ok(found) => found,
            Err(e) if status(&e) == Some(404) => {
                if login.is_none() {
                    let me: serde_json::Value = crab
                        .get("/user", None::<&()>)
                        .await
                        .map_err(|e| fail("asking who the token belongs to".into(), reason(&e)))?;
                    login = me["login"].as_str().map(String::from);
                }
                let description = format!("commanditaire workspace: the {repo} repository");
                let mine = login
                    .as_deref()
                    .is_some_and(|l| l.eq_ignore_ascii_case(&gh.owner));
                let created = if mine {
                    crab.current()
                        .create_repo(&name)
                        .private(true)
                        .description(description)
                        .send()
                        .await
                } else {
                    crab.orgs(&gh.owner)
                        .create_repo(&name)
                        .private(true)
                        .description(description)
                        .send()
                        .await
                };
                let created = created.map_err(|e| fail(format!("creating {full}"), reason(&e)))?;
                tracing::info!("created the private GitHub repository {full}");
                created
            }
            Err(e) => return Err(fail(format!("looking up {full}"), reason(&e))),
        };
        let url = found
            .clone_url
            .ok_or_else(|| fail(format!("looking up {full}"), "no clone_url".into()))?
            .to_string();
        targets.push(Target {
            repo,
            url,
            // GitHub creates the repositories: nothing to create locally.
            local: None,
            token: Some(gh.token.clone()),
        });
    }
    Ok(targets)
}

fn status(e: &octocrab::Error) -> Option<u16> {
    match e {
        octocrab::Error::GitHub { source, .. } => Some(source.status_code.as_u16()),
        _ => None,
    }
}

/// One line a person can act on (octocrab's own display may carry a backtrace).
fn reason(e: &octocrab::Error) -> String {
    match e {
        octocrab::Error::GitHub { source, .. } => {
            let hint = match source.status_code.as_u16() {
                401 => " (the token is invalid or expired)",
                403 => " (the token lacks the rights: it needs the repo scope, or Administration write on the owner)",
                404 => " (no such owner, or the token cannot see it)",
                422 => " (the name is taken or invalid)",
                _ => "",
            };
            format!("{} {}{hint}", source.status_code, source.message)
        }
        other => {
            let text = other.to_string();
            text.lines().next().unwrap_or_default().to_string()
        }
    }
}
