//! [`WorkerHub`]: the actor that owns the task queue, the leases and the registry of connected
//! worker sessions. Sessions ([`super::session::WorkerSession`]) forward every valid message of
//! their worker here; the hub decides, and answers through [`ToSession`].
//!
//! Rules (ARCHITECTURE.md, "Workers"):
//! - a task is leased to one session at a time, never more tasks to a session than its capacity,
//!   and only of a kind the session agreed to run;
//! - `accepted`, `progress` and a `heartbeat` listing the task renew its lease; a lease not
//!   renewed within `pool_server.lease_sec` expires: the holder gets `cancel` and the task is
//!   queued again (first in line) for the next attempt;
//! - a session that ends gives its tasks back at once;
//! - `declined` queues the task again without counting the attempt, and that session is not
//!   offered the same task again;
//! - the first result from the holder completes the task; a duplicate or late result from a
//!   worker that held the task before changes nothing; a message about a task the worker never
//!   held ends that session with `PROTOCOL_VIOLATION`;
//! - a task is one re-login attempt: a `failed` result ends it, and every task that ends without
//!   new credentials is reported to the pool ([`ReloginAttemptFailed`]), which owns the retry
//!   budget and asks for the next attempt (a new task) or applies `expired_action`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use business2api_shared::AccountKey;
use business2api_shared::Secret;
use business2api_shared::protocol::{
    AccountCredentials, CancelReason, Close, FailureReason, Hello, ImapMailbox, OtpSource,
    ProbeTask, ProbeVerdict, ProgressStage, ReloginTask, ServerMessage, Task, TaskId, TaskKindName,
    TaskOutcome, TaskSpec, WorkerId, WorkerMessage, code,
};
use serde::Serialize;

use crate::accounts::{AccountsService, Incoming};
use crate::config::MailboxSettings;
use crate::config::live::LiveConfig;
use crate::pool::supervisor::{ProbeRejected, ReloginAttemptFailed};
use crate::store::StoredCookie;

/// The most tasks waiting or leased at once; a new task beyond it is refused.
pub const MAX_TASKS: usize = 1024;
/// The most times one task is leased (lost leases and disconnects included) before it is dropped,
/// so that a task that crashes every worker does not circulate for ever.
pub const MAX_LEASES: u32 = 16;
/// Finished tasks (completed or dropped) kept for the operator and for recognising late results.
pub const FINISHED_KEPT: usize = 256;
/// The most worker sessions at once; one more is closed with `TOO_MANY_WORKERS`.
pub const MAX_WORKERS: usize = 256;
/// How often leases are checked.
const LEASE_TICK: Duration = Duration::from_millis(200);

/// A message for one session.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum ToSession {
    Send(ServerMessage),
    /// Close the connection with this code and reason.
    Close(Close),
}

/// A session's worker passed the handshake.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    pub session: u64,
    pub addr: Recipient<ToSession>,
    pub hello: Hello,
    pub kinds: Vec<TaskKindName>,
    pub peer: String,
}

/// A session ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    pub session: u64,
}

/// A valid message from a registered session's worker (not `hello`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FromWorker {
    pub session: u64,
    pub message: WorkerMessage,
}

/// Queue a re-login of an account.
#[derive(Message)]
#[rtype(result = "Result<Enqueued, QueueFull>")]
pub struct EnqueueRelogin {
    pub account: AccountKey,
    /// The account's credential generation now (reported back with a failure, so that a
    /// failure after the account got new credentials another way is ignored).
    pub generation: Option<u64>,
}

/// Queue a probe of an account's token fetch with its current credentials.
#[derive(Message)]
#[rtype(result = "Result<Enqueued, QueueFull>")]
pub struct EnqueueProbe {
    pub account: AccountKey,
    pub credentials: AccountCredentials,
    pub generation: Option<u64>,
}

/// Forward a one-time code to the worker holding the account's re-login task.
#[derive(Message)]
#[rtype(result = "Result<TaskId, NoWaitingTask>")]
pub struct DeliverOtp {
    pub account: AccountKey,
    pub code: Secret,
}

/// The account has no re-login task leased to a worker.
#[derive(Debug, Clone, Copy)]
pub struct NoWaitingTask;

/// Report probes that found the credentials refused to `0` (the pool).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReportProbesTo(pub Recipient<ProbeRejected>);

/// The current task of every account that has one (admin view of `/admin/accounts`).
#[derive(Message)]
#[rtype(result = "HashMap<String, AccountTaskView>")]
pub struct AccountTasks;

/// An account's task as `/admin/accounts` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AccountTaskView {
    pub id: String,
    pub kind: TaskKindName,
    pub state: &'static str,
    pub attempts: u32,
    pub worker: Option<String>,
    pub waiting_for_code: bool,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Enqueued {
    pub task: TaskId,
    /// False when a task for the account was already queued or running (that one is returned).
    pub created: bool,
}

/// The queue holds [`MAX_TASKS`] tasks already.
#[derive(Debug, Clone, Copy)]
pub struct QueueFull;

/// Report re-login tasks that end without new credentials to `0` (the pool).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReportFailuresTo(pub Recipient<ReloginAttemptFailed>);

/// The connected workers (admin view).
#[derive(Message)]
#[rtype(result = "Vec<WorkerView>")]
pub struct ListWorkers;

/// The tasks (admin view).
#[derive(Message)]
#[rtype(result = "TasksView")]
pub struct ListTasks;

/// The outcome of storing a re-login's credentials.
#[derive(Message)]
#[rtype(result = "()")]
struct Applied {
    task: TaskId,
    error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub id: String,
    pub version: String,
    pub address: String,
    pub capacity: u16,
    pub kinds: Vec<TaskKindName>,
    pub tasks_in_flight: usize,
    pub tasks: Vec<String>,
    pub connected_at: u64,
    /// Unix ms of the last `heartbeat` (`None` before the first).
    pub last_heartbeat: Option<u64>,
    pub draining: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub id: String,
    pub kind: TaskKindName,
    pub account: String,
    /// `queued`, `leased`, `completed`, `failed` (the worker answered `failed`) or `dropped`
    /// (leased [`MAX_LEASES`] times, or its credentials were not stored).
    pub state: &'static str,
    /// The worker holding the lease.
    pub worker: Option<String>,
    /// Whether the holder acknowledged it.
    pub accepted: bool,
    /// The holder reported that it waits for the one-time code (`progress` `waiting_for_code`).
    pub waiting_for_code: bool,
    /// The current (or last) attempt number.
    pub attempts: u32,
    /// Failed results (a `failed` result ends the task: the pool's budget decides on another).
    pub failures: u32,
    pub last_error: Option<String>,
    pub created_at: u64,
    pub finished_at: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TasksView {
    pub queued: usize,
    pub leased: usize,
    pub tasks: Vec<TaskView>,
    /// Completed and dropped tasks, newest first.
    pub finished: Vec<TaskView>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

struct SessionEntry {
    addr: Recipient<ToSession>,
    worker: WorkerId,
    software: String,
    peer: String,
    capacity: u16,
    kinds: Vec<TaskKindName>,
    held: HashSet<TaskId>,
    connected_at: u64,
    last_heartbeat: Option<u64>,
    draining: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lease {
    Queued,
    Leased {
        session: u64,
        accepted: bool,
        expires: Instant,
    },
}

struct TaskEntry {
    id: TaskId,
    kind: TaskKindName,
    account: AccountKey,
    lease: Lease,
    /// The attempt number of the current (or last) lease.
    attempt: u32,
    failures: u32,
    last_error: Option<String>,
    /// Workers that held a lease on this task (late results from them are ignored).
    holders: Vec<WorkerId>,
    /// Sessions that declined it (not offered again).
    declined_by: HashSet<u64>,
    /// Sessions whose lease on it expired (offered again only when no other session has room).
    expired_on: HashSet<u64>,
    created_at: u64,
    /// The account's credential generation at creation.
    generation: Option<u64>,
    /// A probe's credentials (sent only to the worker holding the task).
    credentials: Option<AccountCredentials>,
    /// The last `progress` stage of the current lease.
    stage: Option<ProgressStage>,
}

struct Finished {
    view: TaskView,
    holders: Vec<WorkerId>,
    generation: Option<u64>,
}

/// The hub actor. See the module docs.
pub struct WorkerHub {
    accounts: AccountsService,
    live: LiveConfig,
    lease: Duration,
    sessions: HashMap<u64, SessionEntry>,
    tasks: HashMap<TaskId, TaskEntry>,
    queue: VecDeque<TaskId>,
    finished: VecDeque<Finished>,
    next_task: u64,
    /// Where re-login tasks that end without new credentials are reported (the pool).
    failures_to: Option<Recipient<ReloginAttemptFailed>>,
    /// Where probes that found the credentials refused are reported (the pool).
    probes_to: Option<Recipient<ProbeRejected>>,
}

impl WorkerHub {
    pub fn new(accounts: AccountsService, live: LiveConfig, lease: Duration) -> WorkerHub {
        WorkerHub {
            accounts,
            live,
            lease,
            sessions: HashMap::new(),
            tasks: HashMap::new(),
            queue: VecDeque::new(),
            finished: VecDeque::new(),
            next_task: 0,
            failures_to: None,
            probes_to: None,
        }
    }

    /// Tells the pool that a re-login attempt of `account` ended without new credentials.
    fn report_failure(&self, account: &AccountKey, generation: Option<u64>, error: &str) {
        let Some(to) = &self.failures_to else {
            return;
        };
        let message = ReloginAttemptFailed {
            account: account.clone(),
            generation,
            error: error.to_owned(),
        };
        // `do_send`: an attempt's outcome is never dropped for a full mailbox.
        to.do_send(message);
    }

    fn new_task_id(&mut self) -> Option<TaskId> {
        self.next_task += 1;
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let short = suffix.get(..8).unwrap_or("0");
        TaskId::parse(&format!("t{}-{short}", self.next_task)).ok()
    }

    fn send(&self, session: u64, message: ToSession) {
        if let Some(s) = self.sessions.get(&session) {
            // A full or closed session mailbox: the session is ending, and its tasks come back
            // when it unregisters.
            let _ = s.addr.try_send(message);
        }
    }

    fn violation(&self, session: u64, reason: &str) {
        tracing::warn!(session, reason, "worker session: protocol violation");
        self.send(
            session,
            ToSession::Close(Close::new(code::PROTOCOL_VIOLATION, reason)),
        );
    }

    /// Leases queued tasks to sessions with room for them, in queue order.
    fn dispatch(&mut self) {
        let mut waiting = VecDeque::new();
        while let Some(id) = self.queue.pop_front() {
            let Some(task) = self.tasks.get(&id) else {
                continue;
            };
            if task.lease != Lease::Queued {
                continue;
            }
            let chosen = self
                .sessions
                .iter()
                .filter(|(sid, s)| {
                    !s.draining
                        && s.held.len() < usize::from(s.capacity)
                        && s.kinds.contains(&task.kind)
                        && !task.declined_by.contains(sid)
                })
                .min_by_key(|(sid, s)| (task.expired_on.contains(sid), s.held.len(), **sid))
                .map(|(sid, _)| *sid);
            match chosen {
                Some(session) => self.lease_to(id, session),
                None => waiting.push_back(id),
            }
        }
        self.queue = waiting;
    }

    fn lease_to(&mut self, id: TaskId, session: u64) {
        let lease = self.lease;
        let Some(entry) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        task.attempt = task.attempt.saturating_add(1);
        task.stage = None;
        task.lease = Lease::Leased {
            session,
            accepted: false,
            expires: Instant::now() + lease,
        };
        if !task.holders.contains(&entry.worker) {
            task.holders.push(entry.worker.clone());
        }
        entry.held.insert(id.clone());
        // The account's own egress: the browser re-login and the probe leave from the address
        // its API traffic uses.
        let proxy = self
            .accounts
            .egress()
            .proxy_of(&task.account)
            .map(|url| Secret::new(url.expose()));
        let spec = match task.kind {
            TaskKindName::Relogin => TaskSpec::Relogin(ReloginTask {
                account: task.account.clone(),
                otp: otp_source(&self.live, &task.account),
                proxy,
            }),
            TaskKindName::Probe => match &task.credentials {
                Some(credentials) => TaskSpec::Probe(ProbeTask {
                    account: task.account.clone(),
                    credentials: credentials.clone(),
                    proxy,
                }),
                None => TaskSpec::Unknown,
            },
            TaskKindName::Unknown => TaskSpec::Unknown,
        };
        let message = ServerMessage::Task(Task {
            id: id.clone(),
            attempt: task.attempt,
            lease_ms: millis(lease),
            spec,
        });
        tracing::info!(task = %id, attempt = task.attempt, worker = %entry.worker, "task leased");
        let _ = entry.addr.try_send(ToSession::Send(message));
    }

    /// Takes the task back from its holder and queues it first in line (or drops it when it
    /// was leased [`MAX_LEASES`] times).
    fn requeue(&mut self, id: &TaskId, count_attempt: bool) {
        let Some(task) = self.tasks.get_mut(id) else {
            return;
        };
        if let Lease::Leased { session, .. } = task.lease
            && let Some(s) = self.sessions.get_mut(&session)
        {
            s.held.remove(id);
        }
        task.lease = Lease::Queued;
        if !count_attempt {
            task.attempt = task.attempt.saturating_sub(1);
        }
        if task.attempt >= MAX_LEASES {
            let error = format!("dropped after {MAX_LEASES} leases without a result");
            task.last_error = Some(error);
            self.finish(id, "dropped");
            return;
        }
        self.queue.push_front(id.clone());
    }

    /// Moves a task to the finished list.
    fn finish(&mut self, id: &TaskId, state: &'static str) {
        let Some(task) = self.tasks.remove(id) else {
            return;
        };
        if let Lease::Leased { session, .. } = task.lease
            && let Some(s) = self.sessions.get_mut(&session)
        {
            s.held.remove(id);
        }
        self.queue.retain(|q| q != id);
        let mut view = self.view_of(&task);
        view.state = state;
        view.finished_at = Some(unix_ms());
        view.worker = None;
        if state != "completed" {
            let error = view.last_error.clone().unwrap_or_default();
            tracing::warn!(task = %id, account = %task.account.label(), state, error = %crate::telemetry::untrusted(&error), "task ended without new credentials");
            if task.kind == TaskKindName::Relogin {
                self.report_failure(&task.account, task.generation, &error);
            }
        }
        self.finished.push_front(Finished {
            view,
            holders: task.holders,
            generation: task.generation,
        });
        self.finished.truncate(FINISHED_KEPT);
    }

    fn view_of(&self, task: &TaskEntry) -> TaskView {
        let (state, worker, accepted) = match task.lease {
            Lease::Queued => ("queued", None, false),
            Lease::Leased {
                session, accepted, ..
            } => (
                "leased",
                self.sessions
                    .get(&session)
                    .map(|s| s.worker.as_str().to_owned()),
                accepted,
            ),
        };
        TaskView {
            id: task.id.as_str().to_owned(),
            kind: task.kind,
            account: task.account.as_str().to_owned(),
            state,
            worker,
            accepted,
            waiting_for_code: matches!(task.lease, Lease::Leased { .. })
                && task.stage == Some(ProgressStage::WaitingForCode),
            attempts: task.attempt,
            failures: task.failures,
            last_error: task.last_error.clone(),
            created_at: task.created_at,
            finished_at: None,
        }
    }

    /// What a message about `id` from `session` refers to.
    fn holder_check(&self, session: u64, id: &TaskId) -> Holding {
        if let Some(task) = self.tasks.get(id)
            && let Lease::Leased { session: s, .. } = task.lease
            && s == session
        {
            return Holding::Holds;
        }
        let Some(worker) = self.sessions.get(&session).map(|s| &s.worker) else {
            return Holding::Never;
        };
        let held_before = self
            .tasks
            .get(id)
            .map(|t| t.holders.contains(worker))
            .or_else(|| {
                self.finished
                    .iter()
                    .find(|f| f.view.id == id.as_str())
                    .map(|f| f.holders.contains(worker))
            })
            .unwrap_or(false);
        if held_before {
            Holding::HeldBefore
        } else {
            Holding::Never
        }
    }

    fn cancel_stale(&self, session: u64, id: &TaskId) {
        self.send(
            session,
            ToSession::Send(ServerMessage::Cancel {
                task: id.clone(),
                reason: CancelReason::LeaseExpired,
            }),
        );
    }

    fn renew(&mut self, id: &TaskId, accept: bool) {
        let lease = self.lease;
        if let Some(task) = self.tasks.get_mut(id)
            && let Lease::Leased {
                session, accepted, ..
            } = task.lease
        {
            task.lease = Lease::Leased {
                session,
                accepted: accepted || accept,
                expires: Instant::now() + lease,
            };
        }
    }

    fn expire_leases(&mut self) {
        let now = Instant::now();
        let expired: Vec<(TaskId, u64)> = self
            .tasks
            .values()
            .filter_map(|t| match t.lease {
                Lease::Leased {
                    session, expires, ..
                } if expires <= now => Some((t.id.clone(), session)),
                _ => None,
            })
            .collect();
        if expired.is_empty() {
            return;
        }
        for (id, session) in expired {
            tracing::info!(task = %id, session, "lease expired; the task goes back to the queue");
            self.cancel_stale(session, &id);
            if let Some(task) = self.tasks.get_mut(&id) {
                task.last_error = Some("the lease expired".to_owned());
                task.expired_on.insert(session);
            }
            self.requeue(&id, true);
        }
        self.dispatch();
    }

    fn on_result(
        &mut self,
        session: u64,
        id: TaskId,
        outcome: TaskOutcome,
        ctx: &mut Context<Self>,
    ) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        if !outcome.fits(task.kind) {
            self.violation(session, "a result that does not fit the task's kind");
            return;
        }
        match outcome {
            TaskOutcome::ReloggedIn { credentials } => {
                let account = task.account.clone();
                task.last_error = None;
                self.finish(&id, "completed");
                let accounts = self.accounts.clone();
                let default_config = self.live.load().default_config.clone();
                let task_id = id.clone();
                let apply = async move {
                    let error = apply_credentials(&accounts, &account, credentials, default_config)
                        .await
                        .err();
                    Applied {
                        task: task_id,
                        error,
                    }
                };
                ctx.spawn(apply.into_actor(self).map(|applied, _, ctx| {
                    ctx.notify(applied);
                }));
            }
            TaskOutcome::Probed { verdict } => {
                let account = task.account.clone();
                let generation = task.generation;
                tracing::info!(task = %id, account = %account.label(), verdict = ?verdict, "probe answered");
                self.finish(&id, "completed");
                if verdict == ProbeVerdict::CredentialsRejected
                    && let (Some(to), Some(generation)) = (&self.probes_to, generation)
                {
                    to.do_send(ProbeRejected {
                        account,
                        generation,
                    });
                }
            }
            TaskOutcome::Failed {
                reason: FailureReason::Cancelled,
                message,
            } => {
                // The worker stopped (drain bound passed) before the task ended: the account's
                // login was not tried to the end, so no attempt is spent on its budget. The task
                // goes back to the queue for another worker (or this one when it returns).
                task.last_error = Some(format!(
                    "cancelled: {}",
                    crate::telemetry::printable(&message)
                ));
                tracing::info!(task = %id, account = %task.account.label(), "the worker stopped before the task ended: queued again");
                self.requeue(&id, true);
            }
            TaskOutcome::Failed { reason, message } => {
                task.failures = task.failures.saturating_add(1);
                let reason_text = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "other".to_owned());
                task.last_error = Some(format!(
                    "{reason_text}: {}",
                    crate::telemetry::printable(&message)
                ));
                // One task, one attempt: the pool counts it and decides on the next.
                self.finish(&id, "failed");
            }
        }
        self.dispatch();
    }
}

enum Holding {
    Holds,
    HeldBefore,
    Never,
}

/// Stores a re-login's credentials through the accounts service (the same path as an admin
/// import): the stored record with its credentials replaced.
async fn apply_credentials(
    accounts: &AccountsService,
    account: &AccountKey,
    credentials: business2api_shared::protocol::AccountCredentials,
    default_config: String,
) -> Result<(), String> {
    let key = account.as_str().to_owned();
    let stored = accounts
        .stored(key)
        .await
        .map_err(|e| format!("the store failed: {e}"))?;
    let Some(mut record) = stored else {
        return Err("the account was removed before its credentials arrived".to_owned());
    };
    record.cookies = credentials
        .cookies
        .into_iter()
        .map(|c| StoredCookie {
            name: c.name,
            value: c.value,
            domain: c.domain,
        })
        .collect();
    record.cookie_string = None;
    record.authorization = credentials.authorization;
    record.config_id = credentials.config_id;
    record.csesidx = credentials.csesidx;
    let merged = accounts
        .import(
            vec![Incoming {
                name: record.email.clone(),
                record,
            }],
            Vec::new(),
            default_config,
        )
        .await
        .map_err(|e| format!("the store failed: {e}"))?;
    if let Some(r) = merged.report.rejected.first() {
        return Err(format!("the new credentials were refused: {}", r.reason));
    }
    Ok(())
}

impl Actor for WorkerHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
        ctx.run_interval(LEASE_TICK, |hub, _| hub.expire_leases());
    }
}

impl Handler<Register> for WorkerHub {
    type Result = ();

    fn handle(&mut self, msg: Register, _: &mut Context<Self>) {
        let same_worker = self.sessions.values().any(|s| s.worker == msg.hello.worker);
        if !same_worker && self.sessions.len() >= MAX_WORKERS {
            let _ = msg.addr.try_send(ToSession::Close(Close::new(
                code::TOO_MANY_WORKERS,
                "the server holds as many worker sessions as it allows",
            )));
            return;
        }
        // A newer session of the same worker id replaces the older one.
        let replaced: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.worker == msg.hello.worker)
            .map(|(id, _)| *id)
            .collect();
        for old in replaced {
            self.send(
                old,
                ToSession::Close(Close::new(
                    code::REPLACED,
                    "a newer session of this worker took its place",
                )),
            );
            self.drop_session(old);
        }
        tracing::info!(session = msg.session, worker = %msg.hello.worker, capacity = msg.hello.capacity, "worker connected");
        self.sessions.insert(
            msg.session,
            SessionEntry {
                addr: msg.addr,
                worker: msg.hello.worker,
                software: msg.hello.software,
                peer: msg.peer,
                capacity: msg.hello.capacity,
                kinds: msg.kinds,
                held: HashSet::new(),
                connected_at: unix_ms(),
                last_heartbeat: None,
                draining: false,
            },
        );
        self.dispatch();
    }
}

impl WorkerHub {
    fn drop_session(&mut self, session: u64) {
        let Some(entry) = self.sessions.get(&session) else {
            return;
        };
        let held: Vec<TaskId> = entry.held.iter().cloned().collect();
        for id in held {
            if let Some(task) = self.tasks.get_mut(&id) {
                task.last_error = Some("the worker holding it disconnected".to_owned());
                task.declined_by.remove(&session);
            }
            self.requeue(&id, true);
        }
        self.sessions.remove(&session);
    }
}

impl WorkerHub {
    /// `accepted` or `progress` from `session` about `task`.
    fn on_ack(&mut self, session: u64, task: &TaskId, stage: Option<ProgressStage>) {
        match self.holder_check(session, task) {
            Holding::Holds => {
                if let Some(stage) = stage
                    && let Some(t) = self.tasks.get_mut(task)
                {
                    t.stage = Some(stage);
                }
                self.renew(task, true);
            }
            Holding::HeldBefore => self.cancel_stale(session, task),
            Holding::Never => {
                self.violation(session, "a message about a task this worker does not hold");
            }
        }
    }

    /// Queues a task of `kind` for `account` unless one is there already (that one is returned).
    fn enqueue(
        &mut self,
        kind: TaskKindName,
        account: AccountKey,
        generation: Option<u64>,
        credentials: Option<AccountCredentials>,
    ) -> Result<Enqueued, QueueFull> {
        if let Some(existing) = self
            .tasks
            .values()
            .find(|t| t.kind == kind && t.account == account)
        {
            return Ok(Enqueued {
                task: existing.id.clone(),
                created: false,
            });
        }
        if self.tasks.len() >= MAX_TASKS {
            return Err(QueueFull);
        }
        let Some(id) = self.new_task_id() else {
            return Err(QueueFull);
        };
        tracing::info!(task = %id, kind = ?kind, account = %account.label(), "task queued");
        self.tasks.insert(
            id.clone(),
            TaskEntry {
                id: id.clone(),
                kind,
                account,
                lease: Lease::Queued,
                attempt: 0,
                failures: 0,
                last_error: None,
                holders: Vec::new(),
                declined_by: HashSet::new(),
                expired_on: HashSet::new(),
                created_at: unix_ms(),
                generation,
                credentials,
                stage: None,
            },
        );
        self.queue.push_back(id.clone());
        self.dispatch();
        Ok(Enqueued {
            task: id,
            created: true,
        })
    }
}

/// The one-time code source of a re-login of `account`, from the configuration in force now:
/// the account's own mailbox, else the global one, else the operator.
fn otp_source(live: &LiveConfig, account: &AccountKey) -> OtpSource {
    let settings = live.load();
    match MailboxSettings::for_account(&settings.otp, account.as_str()) {
        Some(m) => OtpSource::Imap(ImapMailbox {
            host: m.host.clone(),
            port: m.port,
            tls: m.tls,
            username: Secret::new(m.username.clone()),
            password: m.password.clone(),
            folder: m.folder.clone(),
            timeout_ms: millis(m.timeout),
        }),
        None => OtpSource::Operator {
            timeout_ms: millis(settings.otp.operator_timeout),
        },
    }
}

impl Handler<Unregister> for WorkerHub {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _: &mut Context<Self>) {
        if self.sessions.contains_key(&msg.session) {
            tracing::info!(session = msg.session, "worker disconnected");
            self.drop_session(msg.session);
            self.dispatch();
        }
    }
}

impl Handler<FromWorker> for WorkerHub {
    type Result = ();

    fn handle(&mut self, msg: FromWorker, ctx: &mut Context<Self>) {
        let session = msg.session;
        if !self.sessions.contains_key(&session) {
            return;
        }
        match msg.message {
            WorkerMessage::Heartbeat { running } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.last_heartbeat = Some(unix_ms());
                    if running.len() > usize::from(s.capacity) {
                        self.violation(session, "more tasks running than the announced capacity");
                        return;
                    }
                }
                for id in running {
                    match self.holder_check(session, &id) {
                        Holding::Holds => self.renew(&id, false),
                        // Running something it does not (or no longer) hold: stop it.
                        Holding::HeldBefore | Holding::Never => self.cancel_stale(session, &id),
                    }
                }
            }
            WorkerMessage::Accepted { task } => self.on_ack(session, &task, None),
            WorkerMessage::Progress { task, stage } => self.on_ack(session, &task, Some(stage)),
            WorkerMessage::Declined { task, .. } => match self.holder_check(session, &task) {
                Holding::Holds => {
                    if let Some(t) = self.tasks.get_mut(&task) {
                        t.declined_by.insert(session);
                    }
                    self.requeue(&task, false);
                    self.dispatch();
                }
                Holding::HeldBefore => {}
                Holding::Never => {
                    self.violation(session, "declined a task this worker does not hold");
                }
            },
            WorkerMessage::Result(result) => match self.holder_check(session, &result.task) {
                Holding::Holds => self.on_result(session, result.task, result.outcome, ctx),
                // A duplicate or late result: changes nothing.
                Holding::HeldBefore => {
                    tracing::info!(task = %result.task, "duplicate or late result ignored");
                }
                Holding::Never => {
                    self.violation(session, "a result for a task this worker does not hold");
                }
            },
            WorkerMessage::Draining {} => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.draining = true;
                }
            }
            // The session handles these before forwarding.
            WorkerMessage::Hello(_) | WorkerMessage::Unknown => {}
        }
    }
}

impl Handler<EnqueueRelogin> for WorkerHub {
    type Result = Result<Enqueued, QueueFull>;

    fn handle(&mut self, msg: EnqueueRelogin, _: &mut Context<Self>) -> Self::Result {
        self.enqueue(TaskKindName::Relogin, msg.account, msg.generation, None)
    }
}

impl Handler<EnqueueProbe> for WorkerHub {
    type Result = Result<Enqueued, QueueFull>;

    fn handle(&mut self, msg: EnqueueProbe, _: &mut Context<Self>) -> Self::Result {
        self.enqueue(
            TaskKindName::Probe,
            msg.account,
            msg.generation,
            Some(msg.credentials),
        )
    }
}

impl Handler<DeliverOtp> for WorkerHub {
    type Result = Result<TaskId, NoWaitingTask>;

    fn handle(&mut self, msg: DeliverOtp, _: &mut Context<Self>) -> Self::Result {
        let Some((id, session)) = self.tasks.values().find_map(|t| match t.lease {
            Lease::Leased { session, .. }
                if t.kind == TaskKindName::Relogin && t.account == msg.account =>
            {
                Some((t.id.clone(), session))
            }
            _ => None,
        }) else {
            return Err(NoWaitingTask);
        };
        tracing::info!(task = %id, account = %msg.account.label(), "one-time code forwarded to the task's worker");
        self.send(
            session,
            ToSession::Send(ServerMessage::Otp {
                task: id.clone(),
                code: msg.code,
            }),
        );
        Ok(id)
    }
}

impl Handler<ReportProbesTo> for WorkerHub {
    type Result = ();

    fn handle(&mut self, msg: ReportProbesTo, _: &mut Context<Self>) {
        self.probes_to = Some(msg.0);
    }
}

impl Handler<AccountTasks> for WorkerHub {
    type Result = MessageResult<AccountTasks>;

    fn handle(&mut self, _: AccountTasks, _: &mut Context<Self>) -> Self::Result {
        let mut out: HashMap<String, AccountTaskView> = HashMap::new();
        let mut tasks: Vec<&TaskEntry> = self.tasks.values().collect();
        // Re-login first: it is what the operator acts on.
        tasks.sort_by_key(|t| (t.kind != TaskKindName::Relogin, t.created_at));
        for t in tasks {
            let view = self.view_of(t);
            out.entry(view.account.clone()).or_insert(AccountTaskView {
                id: view.id,
                kind: view.kind,
                state: view.state,
                attempts: view.attempts,
                worker: view.worker,
                waiting_for_code: view.waiting_for_code,
                last_error: view.last_error,
            });
        }
        MessageResult(out)
    }
}

impl Handler<crate::pool::supervisor::ReloginWanted> for WorkerHub {
    type Result = ();

    fn handle(&mut self, msg: crate::pool::supervisor::ReloginWanted, ctx: &mut Context<Self>) {
        if let Err(QueueFull) = <Self as Handler<EnqueueRelogin>>::handle(
            self,
            EnqueueRelogin {
                account: msg.account.clone(),
                generation: Some(msg.generation),
            },
            ctx,
        ) {
            tracing::warn!(account = %msg.account.label(), "the task queue is full; a re-login waits for the next request");
        }
    }
}

impl Handler<Applied> for WorkerHub {
    type Result = ();

    fn handle(&mut self, msg: Applied, _: &mut Context<Self>) {
        match msg.error {
            None => {
                tracing::info!(task = %msg.task, "re-login credentials stored; the account serves again")
            }
            Some(error) => {
                tracing::warn!(task = %msg.task, error = %error, "re-login credentials not stored");
                let mut account = None;
                if let Some(f) = self
                    .finished
                    .iter_mut()
                    .find(|f| f.view.id == msg.task.as_str())
                {
                    f.view.state = "dropped";
                    f.view.last_error = Some(error.clone());
                    account = Some((AccountKey::new(&f.view.account), f.generation));
                }
                if let Some((account, generation)) = account {
                    self.report_failure(&account, generation, &error);
                }
            }
        }
    }
}

impl Handler<ReportFailuresTo> for WorkerHub {
    type Result = ();

    fn handle(&mut self, msg: ReportFailuresTo, _: &mut Context<Self>) {
        self.failures_to = Some(msg.0);
    }
}

impl Handler<ListWorkers> for WorkerHub {
    type Result = Vec<WorkerView>;

    fn handle(&mut self, _: ListWorkers, _: &mut Context<Self>) -> Vec<WorkerView> {
        let mut out: Vec<WorkerView> = self
            .sessions
            .values()
            .map(|s| {
                let mut tasks: Vec<String> = s.held.iter().map(|t| t.as_str().to_owned()).collect();
                tasks.sort();
                WorkerView {
                    id: s.worker.as_str().to_owned(),
                    version: s.software.clone(),
                    address: s.peer.clone(),
                    capacity: s.capacity,
                    kinds: s.kinds.clone(),
                    tasks_in_flight: s.held.len(),
                    tasks,
                    connected_at: s.connected_at,
                    last_heartbeat: s.last_heartbeat,
                    draining: s.draining,
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

impl Handler<ListTasks> for WorkerHub {
    type Result = MessageResult<ListTasks>;

    fn handle(&mut self, _: ListTasks, _: &mut Context<Self>) -> Self::Result {
        let mut tasks: Vec<TaskView> = self.tasks.values().map(|t| self.view_of(t)).collect();
        tasks.sort_by_key(|t| t.created_at);
        MessageResult(TasksView {
            queued: tasks.iter().filter(|t| t.state == "queued").count(),
            leased: tasks.iter().filter(|t| t.state == "leased").count(),
            tasks,
            finished: self.finished.iter().map(|f| f.view.clone()).collect(),
        })
    }
}
