//! The sandbox every task container runs in, and the check that the engine applied it.
//!
//! An old engine silently ignores settings it does not know, so every container is read back
//! (inspect) and each field compared before the task is handed to it.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HostConfig, HostConfigLogConfig,
    ResourcesUlimits,
};

use crate::config::Limits;

/// The unprivileged user (nobody) tasks run as.
pub const TASK_USER: &str = "65534:65534";
/// The label that marks the platform's task containers.
pub const ROLE_LABEL: &str = "taskplatform.role";
/// The label naming the executant that started a container.
pub const EXECUTANT_LABEL: &str = "taskplatform.executant";
/// The label naming the project whose tasks a container runs.
pub const PROJECT_LABEL: &str = "taskplatform.project";
/// The engine keeps no log of a task's output: the executant reads the attached streams
/// itself (keeping a bounded tail of stderr), so a chatty task fills no disk.
pub const LOG_DRIVER: &str = "none";

/// A sandbox field the engine did not apply.
#[derive(Debug, thiserror::Error)]
#[error("the Docker engine did not apply the sandbox setting `{field}` (wanted {wanted}, got {got}); refusing to run tasks")]
pub struct SandboxError {
    /// The setting.
    pub field: &'static str,
    /// What was asked.
    pub wanted: String,
    /// What the engine reports.
    pub got: String,
}

/// What to run in a sandboxed container.
#[derive(Debug, Clone)]
pub struct ContainerSpec<'a> {
    /// The image.
    pub image: &'a str,
    /// The command (appended to the image's entrypoint, if any).
    pub cmd: Vec<String>,
    /// Whether the executant writes to the container's standard input.
    pub stdin: bool,
    /// Read-only bind mounts, `host:container`.
    pub read_only_binds: Vec<String>,
    /// The executant's name (label).
    pub executant: &'a str,
    /// The project whose tasks it runs (label; a cancellation stops its containers).
    pub project: &'a str,
}

/// The container's creation body: the command, the labels and the sandbox.
pub fn create_body(spec: &ContainerSpec<'_>, limits: &Limits) -> ContainerCreateBody {
    let labels = HashMap::from([
        (ROLE_LABEL.to_string(), "task".to_string()),
        (EXECUTANT_LABEL.to_string(), spec.executant.to_string()),
        (PROJECT_LABEL.to_string(), spec.project.to_string()),
    ]);
    ContainerCreateBody {
        image: Some(spec.image.to_string()),
        cmd: Some(spec.cmd.clone()),
        user: Some(TASK_USER.into()),
        attach_stdin: Some(spec.stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(spec.stdin),
        // When the executant goes away (even killed), the worker's stdin closes and it exits.
        stdin_once: Some(spec.stdin),
        tty: Some(false),
        network_disabled: Some(true),
        labels: Some(labels),
        host_config: Some(host_config(limits, &spec.read_only_binds)),
        ..Default::default()
    }
}

fn host_config(limits: &Limits, read_only_binds: &[String]) -> HostConfig {
    HostConfig {
        network_mode: Some("none".into()),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_string(),
            format!("rw,noexec,nosuid,nodev,size={}m", limits.tmpfs_mib),
        )])),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        memory: Some(limits.memory_bytes),
        memory_swap: Some(limits.memory_bytes),
        nano_cpus: Some(limits.nano_cpus),
        pids_limit: Some(limits.pids),
        binds: Some(read_only_binds.iter().map(|b| format!("{b}:ro")).collect()),
        log_config: Some(HostConfigLogConfig {
            typ: Some(LOG_DRIVER.into()),
            config: None,
        }),
        ulimits: Some(ulimits(limits)),
        // An init process reaps the task's orphans and passes signals on.
        init: Some(true),
        ..Default::default()
    }
}

fn ulimits(limits: &Limits) -> Vec<ResourcesUlimits> {
    let ulimit = |name: &str, value: i64| ResourcesUlimits {
        name: Some(name.into()),
        soft: Some(value),
        hard: Some(value),
    };
    vec![
        ulimit("nofile", limits.nofile),
        ulimit("nproc", limits.nproc),
    ]
}

/// Ulimits as `name=soft:hard`, sorted, comma-separated: how they are compared.
fn ulimits_text(ulimits: &[ResourcesUlimits]) -> String {
    let mut parts: Vec<String> = ulimits
        .iter()
        .map(|u| {
            format!(
                "{}={}:{}",
                u.name.as_deref().unwrap_or(""),
                u.soft.unwrap_or(-1),
                u.hard.unwrap_or(-1)
            )
        })
        .collect();
    parts.sort();
    parts.join(",")
}

/// Compares what the engine reports of a container with the sandbox it was asked for.
pub fn verify(inspect: &ContainerInspectResponse, limits: &Limits) -> Result<(), SandboxError> {
    let host = inspect.host_config.clone().unwrap_or_default();
    let user = inspect
        .config
        .as_ref()
        .and_then(|c| c.user.clone())
        .unwrap_or_default();
    let check = |field: &'static str, wanted: String, got: String| {
        if wanted == got {
            Ok(())
        } else {
            Err(SandboxError { field, wanted, got })
        }
    };
    check(
        "NetworkMode",
        "none".into(),
        host.network_mode.unwrap_or_default(),
    )?;
    check(
        "ReadonlyRootfs",
        "true".into(),
        host.readonly_rootfs.unwrap_or(false).to_string(),
    )?;
    check(
        "CapDrop",
        "ALL".into(),
        host.cap_drop.unwrap_or_default().join(","),
    )?;
    check(
        "SecurityOpt",
        "no-new-privileges".into(),
        host.security_opt.unwrap_or_default().join(","),
    )?;
    check(
        "Memory",
        limits.memory_bytes.to_string(),
        host.memory.unwrap_or(0).to_string(),
    )?;
    check(
        "MemorySwap",
        limits.memory_bytes.to_string(),
        host.memory_swap.unwrap_or(0).to_string(),
    )?;
    check(
        "NanoCpus",
        limits.nano_cpus.to_string(),
        host.nano_cpus.unwrap_or(0).to_string(),
    )?;
    check(
        "PidsLimit",
        limits.pids.to_string(),
        host.pids_limit.unwrap_or(0).to_string(),
    )?;
    check(
        "Tmpfs",
        "/tmp".into(),
        host.tmpfs
            .unwrap_or_default()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(","),
    )?;
    check("User", TASK_USER.into(), user)?;
    check(
        "LogConfig.Type",
        LOG_DRIVER.into(),
        host.log_config.and_then(|l| l.typ).unwrap_or_default(),
    )?;
    check(
        "Ulimits",
        ulimits_text(&ulimits(limits)),
        ulimits_text(&host.ulimits.unwrap_or_default()),
    )?;
    check(
        "Init",
        "true".into(),
        host.init.unwrap_or(false).to_string(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an engine that applied everything reports.
    fn applied(limits: &Limits) -> ContainerInspectResponse {
        let spec = ContainerSpec {
            image: "img",
            cmd: vec![],
            stdin: false,
            read_only_binds: vec![],
            executant: "e",
            project: "p",
        };
        let body = create_body(&spec, limits);
        ContainerInspectResponse {
            host_config: body.host_config,
            config: Some(bollard::models::ContainerConfig {
                user: body.user,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_setting_the_engine_dropped_is_caught() {
        let limits = Limits::default();
        assert!(verify(&applied(&limits), &limits).is_ok());
        type Drop = fn(&mut HostConfig);
        let table: &[(&str, Drop)] = &[
            ("LogConfig.Type", |h| h.log_config = None),
            ("Ulimits", |h| h.ulimits = None),
            ("Ulimits", |h| {
                if let Some(u) = h.ulimits.as_mut() {
                    u[0].hard = Some(1 << 20);
                }
            }),
            ("Init", |h| h.init = None),
            ("PidsLimit", |h| h.pids_limit = None),
        ];
        for (field, drop) in table {
            let mut inspect = applied(&limits);
            drop(inspect.host_config.as_mut().unwrap());
            let err = verify(&inspect, &limits).unwrap_err();
            assert_eq!(err.field, *field);
        }
    }
}
