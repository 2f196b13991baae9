//! What runs a task: the [`TaskRunner`] trait, the [`TaskContext`] a running task talks through,
//! [`ComposedRunner`], which routes each task kind to its own runner, and [`NoBrowserRunner`],
//! which runs nothing (tests).

use std::sync::Arc;

use business2api_shared::Secret;
use business2api_shared::protocol::{
    FailureReason, ProgressStage, Task, TaskId, TaskKindName, TaskOutcome, TaskSpec,
};
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

/// Runs tasks. The worker calls [`TaskRunner::run`] once per accepted task, at most its
/// capacity at once; a task the server cancels (or that outlives a drain) is stopped by dropping
/// its future, so a runner must release what it holds on drop (a browser session, a mailbox).
pub trait TaskRunner: Send + Sync + 'static {
    /// The task kinds this runner takes (announced in `hello`; others are declined as
    /// `unsupported`).
    fn kinds(&self) -> Vec<TaskKindName>;

    /// Runs `task` to its end. `ctx` reports progress (which renews the lease) and receives the
    /// one-time codes an operator types for it.
    fn run(&self, task: Task, ctx: TaskContext) -> BoxFuture<'static, TaskOutcome>;
}

/// What a running task sends to the connection.
#[derive(Debug)]
pub(crate) enum TaskEvent {
    Progress(TaskId, ProgressStage),
    Done(TaskId, TaskOutcome),
}

/// A running task's line to its session.
#[derive(Debug)]
pub struct TaskContext {
    task: TaskId,
    events: mpsc::UnboundedSender<TaskEvent>,
    codes: mpsc::Receiver<Secret>,
}

/// How many typed codes wait for a task at most (more are dropped: an operator retyping).
pub(crate) const CODE_QUEUE: usize = 4;

impl TaskContext {
    pub(crate) fn new(
        task: TaskId,
        events: mpsc::UnboundedSender<TaskEvent>,
    ) -> (TaskContext, mpsc::Sender<Secret>) {
        let (tx, codes) = mpsc::channel(CODE_QUEUE);
        (
            TaskContext {
                task,
                events,
                codes,
            },
            tx,
        )
    }

    /// A context attached to nothing (tests of runners, local use): progress goes nowhere and
    /// no code ever arrives.
    pub fn detached(task: TaskId) -> TaskContext {
        let (events, _) = mpsc::unbounded_channel();
        TaskContext::new(task, events).0
    }

    /// The task this context belongs to.
    pub fn task(&self) -> &TaskId {
        &self.task
    }

    /// Reports where the task is (sent as `progress`, which renews its lease).
    pub fn progress(&self, stage: ProgressStage) {
        // The session is gone only when the task is being dropped too.
        let _ = self
            .events
            .send(TaskEvent::Progress(self.task.clone(), stage));
    }

    /// The next one-time code the server forwards for this task (`otp`), or `None` once the
    /// session is gone. Callers bound the wait themselves (the task's own timeout).
    pub async fn next_code(&mut self) -> Option<Secret> {
        self.codes.recv().await
    }
}

/// A runner that announces `relogin` and `probe` and fails every task at once with
/// [`FailureReason::Unsupported`] and a fixed message. No mode runs it: client mode and local
/// mode's in-process worker run the browser's re-login runner ([`crate::BrowserRunner`])
/// composed with the server crate's probe runner ([`ComposedRunner`]). Tests use it where a
/// runner must answer without doing anything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBrowserRunner;

/// [`NoBrowserRunner`]'s message for a `relogin`.
pub const NO_BROWSER_MESSAGE: &str = "this worker runs no browser: it cannot re-login accounts";
/// [`NoBrowserRunner`]'s message for a `probe`.
pub const NO_PROBE_MESSAGE: &str = "this worker cannot probe accounts";

impl TaskRunner for NoBrowserRunner {
    fn kinds(&self) -> Vec<TaskKindName> {
        vec![TaskKindName::Relogin, TaskKindName::Probe]
    }

    fn run(&self, task: Task, _ctx: TaskContext) -> BoxFuture<'static, TaskOutcome> {
        let message = match task.spec {
            TaskSpec::Relogin(_) => NO_BROWSER_MESSAGE,
            TaskSpec::Probe(_) => NO_PROBE_MESSAGE,
            TaskSpec::Unknown => "unknown task kind",
        };
        Box::pin(async move {
            TaskOutcome::Failed {
                reason: FailureReason::Unsupported,
                message: message.to_owned(),
            }
        })
    }
}

/// Routes each task to the runner of its kind: `relogin` to one runner, `probe` to another
/// (client mode and local mode's in-process worker compose the browser's re-login runner with
/// the server crate's probe runner). Announces `relogin` if the first runner takes it and
/// `probe` if the second does; a task of an unknown kind fails as `unsupported`.
#[derive(Clone)]
pub struct ComposedRunner {
    relogin: Arc<dyn TaskRunner>,
    probe: Arc<dyn TaskRunner>,
}

impl ComposedRunner {
    pub fn new(relogin: Arc<dyn TaskRunner>, probe: Arc<dyn TaskRunner>) -> ComposedRunner {
        ComposedRunner { relogin, probe }
    }
}

impl TaskRunner for ComposedRunner {
    fn kinds(&self) -> Vec<TaskKindName> {
        let mut kinds = Vec::new();
        if self.relogin.kinds().contains(&TaskKindName::Relogin) {
            kinds.push(TaskKindName::Relogin);
        }
        if self.probe.kinds().contains(&TaskKindName::Probe) {
            kinds.push(TaskKindName::Probe);
        }
        kinds
    }

    fn run(&self, task: Task, ctx: TaskContext) -> BoxFuture<'static, TaskOutcome> {
        match task.kind() {
            TaskKindName::Relogin => self.relogin.run(task, ctx),
            TaskKindName::Probe => self.probe.run(task, ctx),
            TaskKindName::Unknown => Box::pin(async {
                TaskOutcome::Failed {
                    reason: FailureReason::Unsupported,
                    message: "unknown task kind".to_owned(),
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use business2api_shared::AccountKey;
    use business2api_shared::protocol::{OtpSource, ReloginTask};

    use super::*;

    #[tokio::test]
    async fn the_browserless_runner_says_it_has_no_browser() {
        let task = Task {
            id: TaskId::parse("t1").unwrap(),
            attempt: 1,
            lease_ms: 60_000,
            spec: TaskSpec::Relogin(ReloginTask {
                account: AccountKey::new("a@example.com"),
                otp: OtpSource::Operator { timeout_ms: 1000 },
                proxy: None,
            }),
        };
        let ctx = TaskContext::detached(task.id.clone());
        let outcome = NoBrowserRunner.run(task, ctx).await;
        assert_eq!(
            outcome,
            TaskOutcome::Failed {
                reason: FailureReason::Unsupported,
                message: NO_BROWSER_MESSAGE.to_owned(),
            }
        );
        outcome.validate().unwrap();
    }
}
