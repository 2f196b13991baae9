//! The Gemini Business calls (spec §1): each failure names the call it came from.

/// The upstream call that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// U1 `GET /auth/getoxsrf`: the signing key for the short-lived JWT.
    GetXsrfKey,
    /// U2 `widgetCreateSession`.
    CreateSession,
    /// U3 `widgetAddContextFile`.
    AddContextFile,
    /// U4 `widgetStreamAssist`.
    StreamAssist,
    /// U5 `widgetListSessionFileMetadata`.
    ListSessionFiles,
    /// U6 `downloadFile`.
    DownloadFile,
}

impl Endpoint {
    /// The call's number in the upstream spec (`U1` … `U6`): the `call` label of the metrics.
    pub fn code(self) -> &'static str {
        match self {
            Endpoint::GetXsrfKey => "U1",
            Endpoint::CreateSession => "U2",
            Endpoint::AddContextFile => "U3",
            Endpoint::StreamAssist => "U4",
            Endpoint::ListSessionFiles => "U5",
            Endpoint::DownloadFile => "U6",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::GetXsrfKey => "getoxsrf",
            Endpoint::CreateSession => "widgetCreateSession",
            Endpoint::AddContextFile => "widgetAddContextFile",
            Endpoint::StreamAssist => "widgetStreamAssist",
            Endpoint::ListSessionFiles => "widgetListSessionFileMetadata",
            Endpoint::DownloadFile => "downloadFile",
        }
    }
}

impl From<Endpoint> for &'static str {
    fn from(e: Endpoint) -> &'static str {
        e.as_str()
    }
}
