//! `swarmfeed webhook add|list|rm`: managing a server's webhooks over its admin API
//! (`/api/webhooks`), as any other program would.
//!
//! Owns the requests and the reading of their answers; printing is `main`'s.

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};

use super::remote::{BadUrl, base_url, endpoint};
use crate::filter::FilterSpec;
use crate::webhook::WebhookView;

/// Longest one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong, named for the person who typed the command.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    BadUrl(#[from] BadUrl),
    #[error(transparent)]
    Client(#[from] super::remote::ClientSetup),
    #[error("cannot reach {url}: {source}")]
    Unreachable { url: Url, source: reqwest::Error },
    #[error("the server refused the token (401); pass --token or set SWARMFEED_TOKEN")]
    Unauthorized,
    #[error("the server refused (HTTP {status}, {code}): {message}")]
    Rejected { status: u16, code: String, message: String },
    #[error("unreadable answer from the server: {0}")]
    Answer(String),
}

/// A new webhook, as `webhook add` asks for it.
#[derive(Debug, Clone, Default)]
pub struct NewWebhook {
    pub url: String,
    pub filter: FilterSpec,
    /// `standard` or `slack`; the server's default when `None`.
    pub format: Option<String>,
    pub since: Option<u64>,
}

/// A created webhook: its id and, shown this once, its secret.
#[derive(Debug, Clone, Deserialize)]
pub struct Created {
    pub id: String,
    pub secret: String,
}

/// The admin API of one server.
pub struct WebhookClient {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl WebhookClient {
    /// # Errors
    /// The URL is not an `http://` or `https://` URL, or the client cannot be built
    /// (`ca_file`, trusted instead of the system's roots, cannot be used).
    pub fn new(url: &str, token: Option<String>, ca_file: Option<&std::path::Path>) -> Result<Self, WebhookError> {
        let base = base_url(url)?;
        let http = super::remote::http_client(&base, ca_file, REQUEST_TIMEOUT)?;
        Ok(WebhookClient { http, base, token })
    }

    /// `POST /api/webhooks`.
    ///
    /// # Errors
    /// [`WebhookError`]: unreachable, refused (the server's words), or an unreadable answer.
    pub async fn add(&self, new: &NewWebhook) -> Result<Created, WebhookError> {
        let mut body = json!({ "url": new.url, "filter": new.filter });
        if let Some(format) = &new.format {
            body["format"] = json!(format);
        }
        if let Some(since) = new.since {
            body["since"] = json!(since);
        }
        self.call(Method::POST, "api/webhooks", Some(body)).await
    }

    /// `GET /api/webhooks`.
    ///
    /// # Errors
    /// As [`WebhookClient::add`].
    pub async fn list(&self) -> Result<Vec<WebhookView>, WebhookError> {
        #[derive(Deserialize)]
        struct Page {
            webhooks: Vec<WebhookView>,
        }
        Ok(self.call::<Page>(Method::GET, "api/webhooks", None).await?.webhooks)
    }

    /// `DELETE /api/webhooks/{id}`.
    ///
    /// # Errors
    /// As [`WebhookClient::add`]; an unknown id is refused with 404.
    pub async fn remove(&self, id: &str) -> Result<(), WebhookError> {
        let path =
            format!("api/webhooks/{}", percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC));
        self.call::<Value>(Method::DELETE, &path, None).await.map(drop)
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, WebhookError> {
        let url = endpoint(&self.base, path)?;
        let mut request = self.http.request(method, url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|source| WebhookError::Unreachable { url, source })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| WebhookError::Answer(e.to_string()))?;
        if status == StatusCode::UNAUTHORIZED {
            return Err(WebhookError::Unauthorized);
        }
        if !status.is_success() {
            let error: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let field = |name: &str| error["error"][name].as_str().unwrap_or_default().to_owned();
            return Err(WebhookError::Rejected {
                status: status.as_u16(),
                code: field("code"),
                message: field("message"),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| WebhookError::Answer(e.to_string()))
    }
}
