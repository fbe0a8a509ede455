//! Background tasks that are never silently gone. A supervised task that
//! ends or panics while idmd is not stopping is logged (an `error!` naming
//! the task and the panic message), counted
//! (`idm_background_restarts_total{task}`), its health component turns
//! NOT_SERVING, and it is started again after a backoff (doubling from
//! [`Backoff::first`] up to [`Backoff::max`], back to the first once a run
//! lasted [`Backoff::healthy_after`]); its component is SERVING again once
//! it runs.
//!
//! A task is made anew by its `make` for every start, and is expected to
//! watch `stop` itself and end soon after it turns `true` (after the work
//! in hand). Aborting the supervisor's handle aborts the task it runs.

use std::any::Any;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::health::Health;

/// How long a dead task waits before it is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first death.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
    /// A run this long resets the wait to `first`.
    pub healthy_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
        }
    }
}

/// What is supervised: a name for logs and the restart counter, the health
/// component it is part of, and its backoff.
#[derive(Debug, Clone)]
pub struct Task {
    pub name: String,
    /// The health component that is NOT_SERVING while the task is down.
    pub component: Option<&'static str>,
    pub backoff: Backoff,
}

impl Task {
    pub fn new(name: impl Into<String>, component: Option<&'static str>) -> Self {
        Task {
            name: name.into(),
            component,
            backoff: Backoff::default(),
        }
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

/// Runs `make()`'s future on the runtime, under supervision, until `stop`.
pub fn spawn<F, Fut>(
    task: Task,
    health: &Health,
    stop: watch::Receiver<bool>,
    mut make: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    supervise(task, health.clone(), stop, move || tokio::spawn(make()))
}

/// Runs `make()`'s closure on a blocking thread of its own (work that is
/// not `Send`, such as script engines), under supervision, until `stop`.
pub fn spawn_blocking<F, Work>(
    task: Task,
    health: &Health,
    stop: watch::Receiver<bool>,
    mut make: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Work + Send + 'static,
    Work: FnOnce() + Send + 'static,
{
    supervise(task, health.clone(), stop, move || {
        tokio::task::spawn_blocking(make())
    })
}

/// Aborts the task when dropped (with the supervisor, when it is aborted).
struct Running(JoinHandle<()>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn supervise(
    task: Task,
    health: Health,
    mut stop: watch::Receiver<bool>,
    mut start: impl FnMut() -> JoinHandle<()> + Send + 'static,
) -> JoinHandle<()> {
    let Task {
        name,
        component,
        backoff,
    } = task;
    tokio::spawn(async move {
        let mut wait = backoff.first;
        loop {
            if stopping(&stop) {
                return;
            }
            let started = Instant::now();
            let mut running = Running(start());
            if let Some(component) = component {
                health.up(component, &name).await;
            }
            let ended = tokio::select! {
                ended = &mut running.0 => Some(ended),
                _ = stop.wait_for(|stop| *stop) => None,
            };
            let Some(ended) = ended else {
                // The task stops by itself after the work in hand.
                let _ = (&mut running.0).await;
                return;
            };
            if stopping(&stop) {
                return;
            }
            let why = match ended {
                Ok(()) => "it ended".to_string(),
                Err(e) if e.is_panic() => {
                    format!("it panicked: {}", panic_message(&e.into_panic()))
                }
                Err(e) => e.to_string(),
            };
            if started.elapsed() >= backoff.healthy_after {
                wait = backoff.first;
            }
            tracing::error!(task = %name, error = %why, "background task died; restarting it in {wait:?}");
            metrics::counter!("idm_background_restarts_total", "task" => name.clone()).increment(1);
            if let Some(component) = component {
                health.down(component, &name).await;
            }
            let stopped = tokio::select! {
                () = tokio::time::sleep(wait) => false,
                _ = stop.wait_for(|stop| *stop) => true,
            };
            if stopped {
                return;
            }
            wait = (wait * 2).min(backoff.max);
        }
    })
}

fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

/// The text a panic was raised with.
fn panic_message(payload: &Box<dyn Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::health::SCHEDULER;

    fn slow() -> Backoff {
        Backoff {
            first: Duration::from_millis(500),
            max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn a_task_that_panics_is_marked_down_then_runs_again() {
        let (health, _) = crate::health::Health::new().await;
        let (stop, stopped) = watch::channel(false);
        let starts = Arc::new(AtomicUsize::new(0));
        let (ran, mut runs) = watch::channel(0usize);
        let counter = Arc::clone(&starts);
        let supervisor = spawn(
            Task::new("flaky", Some(SCHEDULER)).with_backoff(slow()),
            &health,
            stopped.clone(),
            move || {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let ran = ran.clone();
                let mut stopped = stopped.clone();
                async move {
                    ran.send_replace(n);
                    if n == 1 {
                        panic!("first run fails");
                    }
                    let _ = stopped.wait_for(|s| *s).await;
                }
            },
        );
        let mut changes = health.watch();
        changes.wait_for(|c| !c[SCHEDULER]).await.unwrap();
        assert!(!health.is_up(""), "overall follows the component");
        changes.wait_for(|c| c[SCHEDULER]).await.unwrap();
        runs.wait_for(|n| *n == 2).await.unwrap();
        stop.send(true).unwrap();
        supervisor.await.unwrap();
        assert_eq!(starts.load(Ordering::SeqCst), 2, "not restarted after stop");
    }

    #[tokio::test]
    async fn a_task_on_a_thread_that_panics_comes_back() {
        let (health, _) = crate::health::Health::new().await;
        let (stop, stopped) = watch::channel(false);
        let (ran, mut runs) = watch::channel(0usize);
        let starts = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&starts);
        let handle = tokio::runtime::Handle::current();
        let supervisor = spawn_blocking(
            Task::new("thread", Some(crate::health::OUTBOX)).with_backoff(slow()),
            &health,
            stopped.clone(),
            move || {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let (ran, mut stopped, handle) = (ran.clone(), stopped.clone(), handle.clone());
                move || {
                    ran.send_replace(n);
                    assert!(n > 1, "the first run of the thread fails");
                    handle.block_on(async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    });
                }
            },
        );
        runs.wait_for(|n| *n == 2).await.unwrap();
        health
            .watch()
            .wait_for(|c| c[crate::health::OUTBOX])
            .await
            .unwrap();
        stop.send(true).unwrap();
        supervisor.await.unwrap();
    }

    #[test]
    fn the_panic_message_is_read_from_both_payload_kinds() {
        let text: Box<dyn Any + Send> = Box::new("static");
        assert_eq!(panic_message(&text), "static");
        let owned: Box<dyn Any + Send> = Box::new(String::from("owned"));
        assert_eq!(panic_message(&owned), "owned");
    }
}
