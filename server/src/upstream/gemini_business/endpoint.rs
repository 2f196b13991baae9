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
