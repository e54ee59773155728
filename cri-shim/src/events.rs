//! Container lifecycle events, for `GetContainerEvents`: a kubelet with the evented PLEG learns
//! of every change as it happens instead of listing all containers each second. Each RPC that
//! creates, starts or removes a container or sandbox publishes an event, and the exit watcher
//! ([`ExitWatch`]) publishes a container's exit the moment its monitor records it.
//!
//! Events go to whoever is subscribed at that moment (a tokio broadcast channel); with no
//! subscriber, publishing costs one atomic load. A subscriber that falls more than
//! [`CAPACITY`] events behind loses the oldest, as a kubelet's relist then repairs.

use skiff_proto::runtime::v1 as cri;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Events kept for a slow subscriber.
pub const CAPACITY: usize = 4096;

/// One change of a container or sandbox (a sandbox's events carry its own ID twice).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The container, or the sandbox for a sandbox's own events.
    pub id: String,
    /// The sandbox the container belongs to.
    pub sandbox_id: String,
    /// What happened.
    pub kind: cri::ContainerEventType,
    /// When, in nanoseconds since the epoch.
    pub at: i64,
    /// The sandbox's status when the event happened (read when sent if absent): a sandbox
    /// being removed is gone by the time its last events are sent.
    pub sandbox: Option<Box<cri::PodSandboxStatus>>,
}

/// The event bus of one skiffd.
#[derive(Debug, Clone)]
pub struct Events {
    sender: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            sender: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Events {
    /// True while someone listens (a kubelet's event stream is open).
    pub fn watched(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// Publishes `kind` for `id` of sandbox `sandbox_id`, if anyone listens.
    pub fn publish(&self, id: &str, sandbox_id: &str, kind: cri::ContainerEventType) {
        if self.watched() {
            self.send(Event {
                id: id.to_string(),
                sandbox_id: sandbox_id.to_string(),
                kind,
                at: crate::sandbox::now_nanos(),
                sandbox: None,
            });
        }
    }

    /// Publishes a whole event.
    pub fn send(&self, event: Event) {
        // An error only means no subscriber is left.
        let _ = self.sender.send(event);
    }

    /// A new subscription, receiving every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}

/// Why the exit watcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// No inotify instance.
    #[error("inotify: {0}")]
    Inotify(#[from] nix::Error),
    /// No thread to read it.
    #[error("starting the exit watcher thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// The name the monitor renames into a container's bundle directory when the process ends.
const EXIT_FILE: &str = "exit.json";

/// Turns the monitors' exit files into CONTAINER_STOPPED events: one inotify instance, a watch
/// per running container's bundle directory, read by a thread of its own.
#[derive(Debug)]
pub struct ExitWatch {
    inotify: nix::sys::inotify::Inotify,
    /// Watch → (container, sandbox).
    watches: Mutex<HashMap<nix::sys::inotify::WatchDescriptor, (String, String)>>,
    events: Events,
}

impl ExitWatch {
    /// Starts the watcher thread.
    pub fn start(events: Events) -> Result<Arc<ExitWatch>, WatchError> {
        use nix::sys::inotify::{InitFlags, Inotify};
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC)?;
        let watch = Arc::new(ExitWatch {
            inotify,
            watches: Mutex::default(),
            events,
        });
        let reader = watch.clone();
        std::thread::Builder::new()
            .name("exit-watch".into())
            .spawn(move || reader.run())?;
        Ok(watch)
    }

    /// Watches the bundle of a started container; an exit already recorded is published at once.
    pub fn watch(&self, bundle: &Path, id: &str, sandbox_id: &str) {
        use nix::sys::inotify::AddWatchFlags;
        match self.inotify.add_watch(
            bundle,
            AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_ONLYDIR,
        ) {
            Ok(wd) => {
                self.lock()
                    .insert(wd, (id.to_string(), sandbox_id.to_string()));
            }
            Err(e) => {
                tracing::warn!(container = id, error = %e, "cannot watch for the container's exit")
            }
        }
        // The process may have ended before the watch was in place.
        if bundle.join(EXIT_FILE).exists() {
            self.events.publish(
                id,
                sandbox_id,
                cri::ContainerEventType::ContainerStoppedEvent,
            );
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<nix::sys::inotify::WatchDescriptor, (String, String)>>
    {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self) {
        use nix::sys::inotify::AddWatchFlags;
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) => events,
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "the exit watcher stopped; exits are found by polling only");
                    return;
                }
            };
            for event in events {
                if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                    // The directory went away (the container was removed).
                    self.lock().remove(&event.wd);
                    continue;
                }
                if event.name.as_deref() != Some(std::ffi::OsStr::new(EXIT_FILE)) {
                    continue;
                }
                let Some((id, sandbox_id)) = self.lock().remove(&event.wd) else {
                    continue;
                };
                let _ = self.inotify.rm_watch(event.wd);
                self.events.publish(
                    &id,
                    &sandbox_id,
                    cri::ContainerEventType::ContainerStoppedEvent,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn nothing_is_sent_without_a_subscriber_and_everything_after_one() {
        let events = Events::default();
        assert!(!events.watched());
        events.publish("c1", "s1", cri::ContainerEventType::ContainerCreatedEvent);
        let mut rx = events.subscribe();
        assert!(events.watched());
        events.publish("c2", "s1", cri::ContainerEventType::ContainerStartedEvent);
        let got = rx.recv().await.unwrap();
        assert_eq!(
            (got.id.as_str(), got.kind),
            ("c2", cri::ContainerEventType::ContainerStartedEvent)
        );
        assert!(
            rx.try_recv().is_err(),
            "c1 was published before anyone listened"
        );
    }

    #[tokio::test]
    async fn an_exit_file_renamed_into_a_watched_bundle_is_a_stopped_event() {
        let events = Events::default();
        let mut rx = events.subscribe();
        let watch = ExitWatch::start(events.clone()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("c1");
        std::fs::create_dir(&bundle).unwrap();
        watch.watch(&bundle, "c1", "s1");
        // Other files in the bundle are no exit.
        std::fs::write(bundle.join("other"), "x").unwrap();
        std::fs::write(bundle.join(".exit.tmp"), "{}").unwrap();
        std::fs::rename(bundle.join(".exit.tmp"), bundle.join(EXIT_FILE)).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event within 5 s")
            .unwrap();
        assert_eq!(got.id, "c1");
        assert_eq!(got.sandbox_id, "s1");
        assert_eq!(got.kind, cri::ContainerEventType::ContainerStoppedEvent);

        // Watching a container that already exited reports it at once.
        let done = dir.path().join("c2");
        std::fs::create_dir(&done).unwrap();
        std::fs::write(done.join(EXIT_FILE), "{}").unwrap();
        watch.watch(&done, "c2", "s1");
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.id, "c2");
    }
}
