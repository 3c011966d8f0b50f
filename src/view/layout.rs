//! The page shell: head (styles, scripts, htmx settings), header with navigation and
//! the signed-in token's name, and the main column.
//!
//! Every script is a file under `/assets` loaded with `defer`: no inline script, no
//! inline event handler, no inline style, so the pages run under a Content-Security-Policy
//! without `'unsafe-inline'`.

use maud::{DOCTYPE, Markup, html};

/// htmx settings: no injected `<style>` (it would need `'unsafe-inline'`), no `eval`,
/// and never run a `<script>` that arrives in a swapped fragment.
const HTMX_CONFIG: &str =
    r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"historyCacheSize":0}"#;

/// Which navigation entry is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Live,
    Events,
    Alerts,
    /// The webhooks (admins only).
    Webhooks,
    /// The task board.
    Tasks,
    /// The agent board.
    Agents,
    /// A task or agent page, or the login page.
    Other,
}

/// What a page needs from the shell.
pub(crate) struct Shell<'a> {
    pub title: &'a str,
    pub nav: Nav,
    /// The signed-in token's name; `None` on the login page (no header links then).
    pub user: Option<&'a str>,
    /// The signed-in token is an admin's: the header links its pages too.
    pub admin: bool,
    /// The page draws the events-per-minute chart (loads uPlot).
    pub chart: bool,
}

/// A whole page around `body`.
pub(crate) fn page(shell: &Shell<'_>, body: &Markup) -> Markup {
    render(shell, body, None)
}

/// A page that moves on to the local path `to` by itself (a `refresh` meta tag, which
/// needs no script): a navigation the page starts, so the browser treats it as
/// same-site and sends `SameSite=Strict` cookies set just before.
pub(crate) fn page_moving_on(shell: &Shell<'_>, body: &Markup, to: &str) -> Markup {
    render(shell, body, Some(to))
}

fn render(shell: &Shell<'_>, body: &Markup, moving_on: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="dark";
                @if let Some(to) = moving_on {
                    meta http-equiv="refresh" content=(format!("0;url={to}"));
                }
                meta name="htmx-config" content=(HTMX_CONFIG);
                title { (shell.title) " · swarmfeed" }
                link rel="icon" href="/assets/favicon.svg" type="image/svg+xml";
                link rel="stylesheet" href="/assets/app.css";
                @if shell.chart {
                    link rel="stylesheet" href="/assets/vendor/uplot/uPlot.min.css";
                }
                @if shell.user.is_some() {
                    script defer src="/assets/vendor/htmx.org/htmx.min.js" {}
                    script defer src="/assets/vendor/htmx-ext-ws/ws.min.js" {}
                    script defer src="/assets/vendor/htmx-ext-sse/sse.min.js" {}
                    script defer src="/assets/live.js" {}
                }
                @if shell.chart {
                    script defer src="/assets/vendor/uplot/uPlot.iife.min.js" {}
                    script defer src="/assets/chart.js" {}
                }
            }
            body {
                header.top {
                    a.brand href="/swarm/live" { span aria-hidden="true" { "🐝" } " swarmfeed" }
                    @if let Some(user) = shell.user {
                        nav.top-nav aria-label="Main" {
                            a href="/swarm/live" aria-current=[(shell.nav == Nav::Live).then_some("page")] { "Live" }
                            a href="/swarm/events" aria-current=[(shell.nav == Nav::Events).then_some("page")] { "Events" }
                            a href="/swarm/tasks" aria-current=[(shell.nav == Nav::Tasks).then_some("page")] { "Tasks" }
                            a href="/swarm/agents" aria-current=[(shell.nav == Nav::Agents).then_some("page")] { "Agents" }
                            @if shell.admin {
                                a href="/swarm/alerts" aria-current=[(shell.nav == Nav::Alerts).then_some("page")] { "Alerts" }
                                a href="/swarm/webhooks" aria-current=[(shell.nav == Nav::Webhooks).then_some("page")] { "Webhooks" }
                            }
                        }
                        form.logout method="post" action="/logout" {
                            @if !user.is_empty() {
                                span.who title="signed in with this token" { (user) }
                            }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}
