//! The chain trace: which processes a runtime runs during each RPC of one pod, and for how
//! long. It lines up the driver's RPC spans (`cri --spans`) with the kernel's fork, exec and
//! exit events of the same run:
//!
//! ```text
//! perf record -k monotonic -e sched:sched_process_fork,sched:sched_process_exec,\
//!     sched:sched_process_exit -a -o perf.data -- skiff-bench cri … --spans spans.jsonl
//! perf script -F comm,pid,tid,time,event,trace -i perf.data > perf.txt
//! skiff-bench chain --spans spans.jsonl --perf-script perf.txt
//! ```

use crate::scenarios::Span;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::fmt::Write;
use std::path::Path;

/// A kernel event from `perf script -F comm,pid,tid,time,event,trace`.
#[derive(Clone, Debug, PartialEq)]
struct Event {
    time: f64,
    /// Process (thread group) and thread of the task the event happened in.
    tgid: u32,
    tid: u32,
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    /// The task forked (a process or a thread) `child`, first named `child_comm`.
    Fork {
        child: u32,
        child_comm: String,
    },
    Exec {
        file: String,
    },
    Exit {
        comm: String,
    },
}

/// Parses one line, e.g.
/// `nft 28782/28782 4494.145797: sched:sched_process_exec: filename=/usr/sbin/nft pid=28782 …`.
/// Command names may contain spaces, so fields are found from their ends.
fn parse_line(line: &str) -> Option<Event> {
    let (head, rest) = line.split_once(": sched:sched_process_")?;
    let mut head = head.split_whitespace().rev();
    let time = head.next()?.parse().ok()?;
    let (tgid, tid) = head.next()?.split_once('/')?;
    let (event, args) = rest.split_once(": ")?;
    let between = |from: &str, to: &str| -> Option<String> {
        let start = args.find(from)? + from.len();
        let end = start + args[start..].rfind(to)?;
        Some(args[start..end].to_string())
    };
    let kind = match event {
        "fork" => {
            let at = args.rfind(" child_pid=")?;
            Kind::Fork {
                child: args[at + 11..].trim().parse().ok()?,
                child_comm: between("child_comm=", " child_pid=")?,
            }
        }
        "exec" => Kind::Exec {
            file: between("filename=", " pid=")?,
        },
        "exit" => Kind::Exit {
            comm: between("comm=", " pid=")?,
        },
        _ => return None,
    };
    Some(Event {
        time,
        tgid: tgid.parse().ok()?,
        tid: tid.parse().ok()?,
        kind,
    })
}

/// A task seen being forked during the trace.
#[derive(Clone, Debug)]
struct Task {
    tid: u32,
    /// The process that forked it.
    parent: u32,
    forked: f64,
    /// Its name: the program it exec'd, else its last name.
    name: String,
    first_name: String,
    exec: bool,
    /// Exec'd a file whose name says little; take its name at exit.
    renames: bool,
    thread: bool,
    exited: Option<f64>,
}

impl Task {
    /// Worth a line: a program it exec'd, or a task that ended within the trace and was a
    /// process or a thread that named itself (a dedicated worker). A task that neither exec'd
    /// nor ended is most likely one more thread of a Go or tokio runtime.
    fn shown(&self) -> bool {
        self.exec || (self.exited.is_some() && (!self.thread || self.name != self.first_name))
    }
}

/// Tasks in fork order; a reused TID starts a new task.
fn tasks(events: &[Event]) -> Vec<Task> {
    let mut tasks: Vec<Task> = Vec::new();
    let mut current: HashMap<u32, usize> = HashMap::new();
    for event in events {
        if let Kind::Fork { child, child_comm } = &event.kind {
            current.insert(*child, tasks.len());
            tasks.push(Task {
                tid: *child,
                parent: event.tgid,
                forked: event.time,
                name: child_comm.clone(),
                first_name: child_comm.clone(),
                exec: false,
                renames: false,
                thread: false,
                exited: None,
            });
            continue;
        }
        let Some(&i) = current.get(&event.tid) else {
            continue;
        };
        let task = &mut tasks[i];
        task.thread |= event.tgid != event.tid;
        match &event.kind {
            Kind::Exec { file } => {
                task.exec = true;
                task.name = file.rsplit('/').next().unwrap_or(file).to_string();
                // runc re-executes itself as /proc/self/exe and /dev/fd/N, then names itself
                // runc:[0:PARENT] and so on: its name at exit says more.
                task.renames = file.starts_with("/proc/") || file.starts_with("/dev/fd/");
            }
            Kind::Exit { comm } => {
                task.exited = Some(event.time);
                if !task.exec || task.renames {
                    task.name = comm.clone();
                }
                current.remove(&event.tid);
            }
            Kind::Fork { .. } => {}
        }
    }
    tasks
}

/// How many forks separate `task` from `daemon`, if it descends from it.
fn depth(tasks: &[Task], by_tid: &HashMap<u32, usize>, task: &Task, daemon: u32) -> Option<usize> {
    let mut depth = 1;
    let mut parent = task.parent;
    while parent != daemon {
        let &i = by_tid.get(&parent)?;
        let next = tasks[i].parent;
        if next == parent || depth > 32 {
            return None;
        }
        parent = next;
        depth += 1;
    }
    Some(depth)
}

/// The timeline of one pod cycle per runtime (the one with the median pod-ready time, or
/// `pod`), from the files described in the module documentation.
pub fn render(spans_path: &Path, perf_path: &Path, pod: Option<&str>) -> Result<String> {
    let spans: Vec<Span> = std::fs::read_to_string(spans_path)
        .with_context(|| format!("reading {}", spans_path.display()))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let perf = std::fs::read_to_string(perf_path)
        .with_context(|| format!("reading {}", perf_path.display()))?;
    let mut events: Vec<Event> = perf.lines().filter_map(parse_line).collect();
    if events.is_empty() {
        bail!("no sched_process events in {}", perf_path.display());
    }
    events.sort_by(|a, b| a.time.total_cmp(&b.time));
    let tasks = tasks(&events);

    let mut out = String::new();
    let mut runtimes: Vec<&str> = spans.iter().map(|s| s.runtime.as_str()).collect();
    runtimes.dedup();
    runtimes.sort();
    runtimes.dedup();
    for runtime in runtimes {
        let mine: Vec<&Span> = spans.iter().filter(|s| s.runtime == runtime).collect();
        let Some(pod) = pod.map(str::to_string).or_else(|| median_pod(&mine)) else {
            continue;
        };
        let cycle: Vec<&Span> = mine.into_iter().filter(|s| s.pod == pod).collect();
        let Some(first) = cycle.first() else {
            continue;
        };
        let daemon = first.daemon_pid;
        let origin = first.start;
        let _ = writeln!(
            out,
            "{runtime} (daemon pid {daemon}), pod {pod}: ms from RunPodSandbox, duration ms"
        );
        // Only tasks of this cycle: a PID may be reused later in the run.
        let window_end = cycle.last().map_or(origin, |s| s.end);
        let mut by_tid = HashMap::new();
        for (i, task) in tasks.iter().enumerate() {
            if task.forked <= window_end {
                by_tid.insert(task.tid, i);
            }
        }
        for span in &cycle {
            let _ = writeln!(
                out,
                "{:>8.1}  {:<40} {:>7.1}",
                (span.start - origin) * 1000.0,
                span.rpc,
                (span.end - span.start) * 1000.0
            );
            let mut busy = Vec::new();
            for task in &tasks {
                if task.forked < span.start || task.forked > span.end || !task.shown() {
                    continue;
                }
                let Some(depth) = depth(&tasks, &by_tid, task, daemon) else {
                    continue;
                };
                let end = task.exited.unwrap_or(f64::INFINITY);
                let duration = match task.exited {
                    Some(end) => format!("{:>7.1}", (end - task.forked) * 1000.0),
                    None => "    ...".to_string(),
                };
                let label = if task.thread {
                    format!("{} (thread)", task.name)
                } else {
                    task.name.clone()
                };
                let indent = "  ".repeat(depth);
                let _ = writeln!(
                    out,
                    "{:>8.1}  {:<40} {duration}",
                    (task.forked - origin) * 1000.0,
                    format!("{indent}{label}")
                );
                // Helpers that came and went within the call: the call waited on them
                // (directly or through a shim) unless it did other work meanwhile.
                if end <= span.end {
                    busy.push((task.forked, end));
                }
            }
            let covered = union_length(&mut busy);
            let length = span.end - span.start;
            if length > 0.0 {
                let _ = writeln!(
                    out,
                    "{:>8}  {:<40} {:>7.1}  ({:.0}% of the call)",
                    "",
                    "  = in helpers started and ended here",
                    covered * 1000.0,
                    100.0 * covered / length
                );
            }
        }
        out.push('\n');
    }
    Ok(out)
}

/// The pod whose RunPodSandbox..StartContainer took the median time.
fn median_pod(spans: &[&Span]) -> Option<String> {
    let mut ready: HashMap<&str, (f64, f64)> = HashMap::new();
    for span in spans {
        let entry = ready
            .entry(span.pod.as_str())
            .or_insert((f64::INFINITY, 0.0));
        if span.rpc == "RunPodSandbox" {
            entry.0 = span.start;
        }
        if span.rpc == "StartContainer" {
            entry.1 = span.end;
        }
    }
    let mut pods: Vec<(f64, &str)> = ready
        .into_iter()
        .filter(|(_, (start, end))| end > start)
        .map(|(pod, (start, end))| (end - start, pod))
        .collect();
    pods.sort_by(|a, b| a.0.total_cmp(&b.0));
    pods.get(pods.len().checked_sub(1)? / 2)
        .map(|(_, p)| p.to_string())
}

/// Total length covered by the intervals.
fn union_length(intervals: &mut [(f64, f64)]) -> f64 {
    intervals.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut total = 0.0;
    let mut current: Option<(f64, f64)> = None;
    for &(start, end) in intervals.iter() {
        current = match current {
            Some((s, e)) if start <= e => Some((s, e.max(end))),
            Some((s, e)) => {
                total += e - s;
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    total + current.map_or(0.0, |(s, e)| e - s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_perf_lines() {
        let fork = "tokio-rt-worker 28069/28072 4494.140117: sched:sched_process_fork: \
                    comm=tokio-rt-worker pid=28072 child_comm=tokio-rt-worker child_pid=28779";
        assert_eq!(
            parse_line(fork),
            Some(Event {
                time: 4494.140117,
                tgid: 28069,
                tid: 28072,
                kind: Kind::Fork {
                    child: 28779,
                    child_comm: "tokio-rt-worker".into()
                }
            })
        );
        let exec = "nft 28782/28782 4494.145797: sched:sched_process_exec: \
                    filename=/usr/sbin/nft pid=28782 old_pid=28782";
        assert_eq!(
            parse_line(exec).unwrap().kind,
            Kind::Exec {
                file: "/usr/sbin/nft".into()
            }
        );
        let exit = "opt 4zccgpcwhix 28776/28776 4494.203410: sched:sched_process_exit: \
                    comm=opt 4zccgpcwhix pid=28776 prio=130 group_dead=false";
        let event = parse_line(exit).unwrap();
        assert_eq!(event.tid, 28776);
        assert_eq!(
            event.kind,
            Kind::Exit {
                comm: "opt 4zccgpcwhix".into()
            }
        );
        assert_eq!(parse_line("garbage"), None);
    }

    #[test]
    fn unions_intervals() {
        let mut v = vec![(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)];
        assert_eq!(union_length(&mut v), 4.0);
        assert_eq!(union_length(&mut []), 0.0);
    }
}
