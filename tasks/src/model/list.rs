//! [`Tasks`]: a project's tasks held compactly, as their canonical JSON lines.
//!
//! A `Task` held as a struct costs about 350 bytes for a small `exec` task (its strings and
//! vectors each a heap block), and a project may have a million tasks. Held as the JSON line
//! it is recorded and published as, it costs its length plus 8 bytes; a task is decoded only
//! when it is used (published, computed, shown), which costs a microsecond or so.

use std::fmt;

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Task;

/// An ordered list of tasks, stored as their canonical JSON lines ([`Task::to_json`]) one
/// after the other, each ended by a newline: the bytes of `tasks.jsonl`.
///
/// It reads like a `Vec<Task>` that hands out decoded copies: [`Tasks::get`] and
/// [`Tasks::iter`] decode, [`Tasks::json`] and [`Tasks::digest`] do not. It serializes as
/// a sequence of tasks, exactly as a `Vec<Task>` does. Equal lists have equal bytes: each
/// task is stored in its one canonical form.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tasks {
    /// The canonical JSON of every task, each line ended by `\n`.
    lines: Vec<u8>,
    /// Where each line ends in `lines` (the offset of its newline).
    ends: Vec<usize>,
}

impl Tasks {
    /// An empty list.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// How many tasks.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there is no task.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Appends `task` (stored as its canonical JSON).
    pub fn push(&mut self, task: &Task) {
        serde_json::to_writer(&mut self.lines, task).expect("a task always serializes");
        self.ends.push(self.lines.len());
        self.lines.push(b'\n');
    }

    /// The canonical JSON of the task at `position` (what is published and digested),
    /// without decoding it.
    pub fn json(&self, position: usize) -> Option<&[u8]> {
        let end = *self.ends.get(position)?;
        let start = match position {
            0 => 0,
            _ => self.ends[position - 1] + 1,
        };
        Some(&self.lines[start..end])
    }

    /// The task at `position`, decoded.
    pub fn get(&self, position: usize) -> Option<Task> {
        self.json(position).map(decode)
    }

    /// [`Task::digest`] of the task at `position`, without decoding it.
    pub fn digest(&self, position: usize) -> Option<String> {
        self.json(position).map(super::digest_of)
    }

    /// The tasks in order, each decoded as it comes.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            tasks: self,
            next: 0,
            end: self.len(),
        }
    }

    /// Every task as a `Vec` (for a few tasks: a decoded task takes several times the room).
    pub fn to_vec(&self) -> Vec<Task> {
        self.iter().collect()
    }

    /// The tasks at the positions `keep` accepts, copied as they are stored (not decoded).
    pub fn subset(&self, mut keep: impl FnMut(usize) -> bool) -> Tasks {
        let mut out = Tasks::new();
        for position in (0..self.len()).filter(|&p| keep(p)) {
            let line = self.json(position).expect("a position of the list");
            out.lines.extend_from_slice(line);
            out.ends.push(out.lines.len());
            out.lines.push(b'\n');
        }
        out
    }

    /// Keeps only the tasks `keep` accepts, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&Task) -> bool) {
        let kept: Vec<bool> = self.iter().map(|t| keep(&t)).collect();
        *self = self.subset(|position| kept[position]);
    }

    /// All the lines: the bytes of the project's `tasks.jsonl` (each line ended by `\n`).
    pub fn jsonl(&self) -> &[u8] {
        &self.lines
    }
}

/// Decodes a line this list stored: it was encoded from a `Task`, so it decodes.
fn decode(line: &[u8]) -> Task {
    serde_json::from_slice(line).expect("a stored task decodes")
}

/// The iterator of [`Tasks::iter`]: each task decoded as it comes.
#[derive(Clone)]
pub struct Iter<'a> {
    tasks: &'a Tasks,
    next: usize,
    end: usize,
}

impl Iterator for Iter<'_> {
    type Item = Task;

    fn next(&mut self) -> Option<Task> {
        if self.next >= self.end {
            return None;
        }
        self.next += 1;
        self.tasks.get(self.next - 1)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.end - self.next;
        (left, Some(left))
    }

    fn nth(&mut self, n: usize) -> Option<Task> {
        self.next = self.next.saturating_add(n).min(self.end);
        self.next()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Task> {
        if self.next >= self.end {
            return None;
        }
        self.end -= 1;
        self.tasks.get(self.end)
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Tasks {
    type Item = Task;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl FromIterator<Task> for Tasks {
    fn from_iter<I: IntoIterator<Item = Task>>(iter: I) -> Tasks {
        let mut tasks = Tasks::new();
        tasks.extend(iter);
        tasks
    }
}

impl Extend<Task> for Tasks {
    fn extend<I: IntoIterator<Item = Task>>(&mut self, iter: I) {
        for task in iter {
            self.push(&task);
        }
    }
}

impl From<Vec<Task>> for Tasks {
    fn from(tasks: Vec<Task>) -> Tasks {
        tasks.into_iter().collect()
    }
}

impl From<&[Task]> for Tasks {
    fn from(tasks: &[Task]) -> Tasks {
        let mut out = Tasks::new();
        for task in tasks {
            out.push(task);
        }
        out
    }
}

impl fmt::Debug for Tasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Tasks {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for task in self {
            seq.serialize_element(&task)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Tasks {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Tasks, D::Error> {
        struct List;

        impl<'de> Visitor<'de> for List {
            type Value = Tasks;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence of tasks")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tasks, A::Error> {
                let mut tasks = Tasks::new();
                while let Some(task) = seq.next_element::<Task>()? {
                    tasks.push(&task);
                }
                Ok(tasks)
            }
        }

        deserializer.deserialize_seq(List)
    }
}
