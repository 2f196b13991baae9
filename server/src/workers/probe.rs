//! Probe tasks: does an account's token fetch work from this network? The runner mints a token
//! with the gateway's own Gemini Business authenticator (U1 `/auth/getoxsrf` with the account's
//! cookies and csesidx, then the JWT), so the base URL and the proxy are the gateway's.
//! It lives in the server crate because the worker crate cannot depend on it; client and
//! local mode compose it with the re-login runner ([`business2api_worker::ComposedRunner`]).

use std::sync::Arc;

use business2api_shared::protocol::{
    AccountCredentials, FailureReason, ProbeVerdict, ProgressStage, Task, TaskKindName,
    TaskOutcome, TaskSpec,
};
use business2api_worker::{TaskContext, TaskRunner};
use futures_util::future::BoxFuture;

use crate::accounts::{Cookie, Credentials};
use crate::egress::{ClientRecipe, Egress};

/// How a probe's client through the task's proxy is built.
const PROBE_RECIPE: ClientRecipe = ClientRecipe {
    connect_timeout: std::time::Duration::from_secs(10),
    plain_http_upstream: false,
};
use crate::upstream::{AccountAction, Authenticator};

/// Runs `probe` tasks with an [`Authenticator`].
#[derive(Debug, Clone)]
pub struct ProbeRunner {
    authenticator: Arc<dyn Authenticator>,
}

impl ProbeRunner {
    pub fn new(authenticator: Arc<dyn Authenticator>) -> ProbeRunner {
        ProbeRunner { authenticator }
    }
}

/// The wire credentials as the gateway's.
pub fn credentials_of(wire: AccountCredentials) -> Credentials {
    Credentials {
        cookies: wire
            .cookies
            .into_iter()
            .map(|c| Cookie {
                name: c.name,
                value: c.value,
                domain: c.domain,
            })
            .collect(),
        csesidx: wire.csesidx,
        config_id: wire.config_id,
        authorization: wire.authorization,
    }
}

impl TaskRunner for ProbeRunner {
    fn kinds(&self) -> Vec<TaskKindName> {
        vec![TaskKindName::Probe]
    }

    fn run(&self, task: Task, ctx: TaskContext) -> BoxFuture<'static, TaskOutcome> {
        let authenticator = Arc::clone(&self.authenticator);
        Box::pin(async move {
            let TaskSpec::Probe(probe) = task.spec else {
                return TaskOutcome::Failed {
                    reason: FailureReason::Unsupported,
                    message: "this runner only probes".to_owned(),
                };
            };
            ctx.progress(ProgressStage::Probing);
            // The account's own egress, as the server pinned it: a probe from another address
            // would say nothing about the account's.
            let egress = match &probe.proxy {
                None => Egress::direct(),
                Some(url) => match crate::config::ProxyUrl::parse(url.expose())
                    .and_then(|url| Egress::standalone(url, &PROBE_RECIPE))
                {
                    Ok(egress) => egress,
                    Err(e) => {
                        return TaskOutcome::Failed {
                            reason: FailureReason::Unsupported,
                            message: format!("the task's proxy is not usable: {e}"),
                        };
                    }
                },
            };
            let credentials = credentials_of(probe.credentials);
            match authenticator.authenticate(&credentials, &egress).await {
                Ok(_) => TaskOutcome::Probed {
                    verdict: ProbeVerdict::Healthy,
                },
                Err(e) if e.account_action() == AccountAction::NeedsRelogin => {
                    TaskOutcome::Probed {
                        verdict: ProbeVerdict::CredentialsRejected,
                    }
                }
                Err(e) => TaskOutcome::Failed {
                    reason: FailureReason::NetworkFailed,
                    message: format!("the token fetch failed: {}", e.message),
                },
            }
        })
    }
}
