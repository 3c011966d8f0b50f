//! `/swarm/tasks`: the task board (DESIGN §10): tabs by status with their counts,
//! filters in the URL, the tasks newest first a page at a time, and, for an operator
//! who may act, the form that posts a task. `/swarm/board/tasks` is the board alone
//! (tabs and table), which the page re-fetches (htmx) when its feed of task events
//! brings one, as `/swarm/live` does with its panels.
//!
//! Reads the store's board through [`crate::http::boards`], as `GET /api/tasks` does.

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};

use super::live::{Feed, FeedOrder, feed};
use super::{PageError, badge, html_page, is_admin, may_act, up_to_head, who};
use crate::auth::Principal;
use crate::filter::{Filter, FilterSpec};
use crate::http::AppState;
use crate::http::boards::{TaskPage, TaskParams, board_caught_up, task_page};
use crate::http::error::{ApiError, ApiQuery};
use crate::store::Order;
use crate::store::board::{BoardStatus, Recent, TaskQuery, Within};
use crate::swarm::rules::MAX_DESCRIPTION_CHARS;
use crate::view::event::{Detail, agent_href, clock, query_value, task_href};
use crate::view::layout::{Nav, Shell, page};

/// Task events the side feed starts with.
const FEED_ROWS: usize = 20;

/// The event types whose arrival changes the task board.
const TASK_TYPES: &str = "task.*,bid.*,auction.*";

/// What the post-a-task form shows again after a refusal: what was typed and why it
/// was refused.
#[derive(Debug, Default)]
pub(crate) struct PostForm {
    pub description: String,
    pub error: Option<String>,
}

/// `GET /swarm/tasks`.
#[tracing::instrument(skip_all)]
pub(crate) async fn page_handler(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(p): ApiQuery<TaskParams>,
) -> Result<Response, PageError> {
    let markup = tasks_page(&state, &principal, &p, &PostForm::default()).await?;
    Ok(html_page(markup))
}

/// The whole page for `p`, with the post form as `form` says.
///
/// # Errors
/// Bad parameters (named) or a store failure.
pub(crate) async fn tasks_page(
    state: &AppState,
    principal: &Principal,
    p: &TaskParams,
    form: &PostForm,
) -> Result<maud::Markup, PageError> {
    let q = p.query()?;
    let board = board(state, &q).await?;
    let types = Filter::from_spec(FilterSpec {
        types: TASK_TYPES.split(',').map(str::to_owned).collect(),
        ..FilterSpec::default()
    })?;
    let (since, events) = up_to_head(state, types, Order::Desc, FEED_ROWS).await?;
    let activity = feed(&Feed {
        title: "Task activity",
        since,
        query: format!("types={}", query_value(TASK_TYPES)),
        order: FeedOrder::NewestFirst,
        events: &events,
        detail: Detail::Compact,
        chips: None,
        footer: Some(
            html! { a.more href=(format!("/swarm/events?types={}", query_value(TASK_TYPES))) { "All task events →" } },
        ),
    });
    let body = html! {
        header.page-head {
            h1.page-title { "Tasks" }
        }
        @if may_act(principal) { (post_form(form)) }
        (filters(&q))
        div.live-grid {
            div.live-main { (board) }
            div.live-side { (activity) }
        }
    };
    let shell =
        Shell { title: "Tasks", nav: Nav::Tasks, user: Some(who(principal)), chart: false, admin: is_admin(principal) };
    Ok(page(&shell, &body))
}

/// `GET /swarm/board/tasks`: the tabs and the table alone, for the page to re-fetch.
pub(crate) async fn board_fragment(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<TaskParams>,
) -> Result<Response, PageError> {
    let q = p.query()?;
    Ok(html_page(board(&state, &q).await?))
}

/// The URL of the board for `q` with `status` (`None`: every status) and `after`.
fn href(path: &str, q: &TaskQuery, status: Option<BoardStatus>, after: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(s) = status {
        parts.push(format!("status={}", s.as_str()));
    }
    if let Some(a) = &q.agent_id {
        parts.push(format!("agent_id={}", query_value(a)));
    }
    if let Some(text) = &q.q {
        parts.push(format!("q={}", query_value(text)));
    }
    if let Some(r) = q.recent {
        parts.push(format!("within={}", r.within.as_str()));
    }
    if let Some(a) = after {
        parts.push(format!("after={}", query_value(a)));
    }
    if q.limit != crate::http::boards::DEFAULT_PAGE {
        parts.push(format!("limit={}", q.limit));
    }
    if parts.is_empty() { path.to_owned() } else { format!("{path}?{}", parts.join("&")) }
}

/// The tabs with their counts and a page of tasks: the part that follows the log.
async fn board(state: &AppState, q: &TaskQuery) -> Result<Markup, PageError> {
    board_caught_up(state).await;
    let counts = state.store.count_tasks(q.clone()).await?;
    let TaskPage { tasks, next } = task_page(state, q.clone()).await?;
    let count = |s: BoardStatus| counts.iter().find(|(c, _)| *c == s).map_or(0, |(_, n)| *n);
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    let after = q.before_seq.map(|b| b.to_string());
    let fragment = href("/swarm/board/tasks", q, q.status, after.as_deref());
    Ok(html! {
        div #task-board hx-get=(fragment) hx-trigger="sf:swarm from:body, every 15s" hx-swap="outerHTML" {
            nav.chips.tabs aria-label="Tasks by status" {
                a.chip href=(href("/swarm/tasks", q, None, None)) aria-current=[q.status.is_none().then_some("page")] {
                    "All " span.count { (total) }
                }
                @for s in BoardStatus::ALL {
                    a.chip class=[matches!(s, BoardStatus::Failed).then_some("chip--bad")]
                        href=(href("/swarm/tasks", q, Some(s), None))
                        aria-current=[(q.status == Some(s)).then_some("page")] data-status=(s.as_str()) {
                        (title_case(s.as_str())) " " span.count { (count(s)) }
                    }
                }
            }
            (windows(q))
            section.panel aria-labelledby="board-title" {
                h2 #board-title {
                    (q.status.map_or("All tasks", |s| tab_title(s)))
                    @if let Some(r) = q.recent { " " span.muted { (window_title(r.within).to_lowercase()) } }
                }
                @if tasks.is_empty() {
                    p.muted { "No task here." }
                } @else {
                    ul.board-list {
                        @for t in &tasks {
                            li.board-row data-task=(t.task_id) {
                                div.board-main {
                                    a.board-title href=(task_href(&t.task_id)) {
                                        (if t.description.is_empty() { &t.task_id } else { &t.description })
                                    }
                                    (badge(t.status.as_str()))
                                }
                                div.board-meta.muted {
                                    code { (t.task_id) }
                                    " · posted "
                                    @if let Some(ms) = crate::event::parse_timestamp(&t.created_at) {
                                        time datetime=(t.created_at) data-ts=(ms) { (clock(ms)) }
                                    }
                                    " · " (t.bids) " bids"
                                    @if let Some(agent) = &t.agent_id {
                                        " · " a href=(agent_href(agent)) { (agent) }
                                        @if let Some(sats) = t.bid_sats { " for " (sats) " sats" }
                                    }
                                    @if let Some(original) = &t.retry_of {
                                        " · retry of " a href=(task_href(original)) { (original) }
                                    }
                                    @if let Some(reason) = &t.reason { " · " span.bad { (reason) } }
                                }
                            }
                        }
                    }
                }
                nav.pager aria-label="Pages" {
                    @if q.before_seq.is_some() {
                        a.btn href=(href("/swarm/tasks", q, q.status, None)) { "← Newest" }
                    }
                    @if let Some(next) = &next {
                        a.btn href=(href("/swarm/tasks", q, q.status, Some(next))) rel="next" { "Older →" }
                    }
                }
            }
        }
    })
}

/// The time-window chips: any time, or only the tasks that changed in the last hour,
/// day or week; each keeps the status tab and the other filters.
fn windows(q: &TaskQuery) -> Markup {
    let with = |within: Option<Within>| {
        // The window is counted from the read, so a link only names it.
        let recent = within.map(|w| Recent::before(w, 0));
        href("/swarm/tasks", &TaskQuery { recent, ..q.clone() }, q.status, None)
    };
    let current = q.recent.map(|r| r.within);
    html! {
        nav.chips.windows aria-label="Tasks by when they last changed" {
            a.chip href=(with(None)) aria-current=[current.is_none().then_some("page")] data-within="" { "Any time" }
            @for w in Within::ALL {
                a.chip href=(with(Some(w))) aria-current=[(current == Some(w)).then_some("page")] data-within=(w.as_str()) {
                    (window_title(w))
                }
            }
        }
    }
}

fn window_title(w: Within) -> &'static str {
    match w {
        Within::Hour => "Last hour",
        Within::Day => "Last day",
        Within::Week => "Last week",
    }
}

fn title_case(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

fn tab_title(s: BoardStatus) -> &'static str {
    match s {
        BoardStatus::Bidding => "Taking bids",
        BoardStatus::Assigned => "Assigned",
        BoardStatus::Running => "Running",
        BoardStatus::Completed => "Completed",
        BoardStatus::Failed => "Failed",
        BoardStatus::Cancelled => "Cancelled",
    }
}

/// The agent and text filters, kept in the URL; the status and the window stay the
/// chips'.
fn filters(q: &TaskQuery) -> Markup {
    html! {
        form.filters method="get" action="/swarm/tasks" role="search" {
            @if let Some(s) = q.status { input type="hidden" name="status" value=(s.as_str()); }
            @if let Some(r) = q.recent { input type="hidden" name="within" value=(r.within.as_str()); }
            label { "Search " input type="search" name="q" value=[q.q.as_deref()] placeholder="description or id"; }
            label { "Agent " input type="text" name="agent_id" value=[q.agent_id.as_deref()] placeholder="agent id"; }
            button.btn type="submit" { "Filter" }
            @if q.q.is_some() || q.agent_id.is_some() {
                a href=(href("/swarm/tasks", &TaskQuery { agent_id: None, q: None, ..q.clone() }, q.status, None)) { "Clear" }
            }
        }
    }
}

/// The form that posts a task (`POST /swarm/tasks`, form-encoded): the coordinator
/// opens its auction and the browser lands on the new task's page. Folded away until
/// asked for (or refused), so the board comes first on a phone.
fn post_form(form: &PostForm) -> Markup {
    html! {
        details.panel.post-task open[form.error.is_some()] {
            summary #post-title { "Post a task…" }
            form method="post" action="/swarm/tasks" {
                label for="description" { "Description" }
                textarea #description name="description" rows="2" required
                    maxlength=(MAX_DESCRIPTION_CHARS)
                    aria-invalid=[form.error.is_some().then_some("true")]
                    aria-describedby=[form.error.is_some().then_some("post-error")] { (form.description) }
                @if let Some(error) = &form.error {
                    p #post-error .bad role="alert" { (error) }
                }
                p.muted { "It opens an auction at once; agents that have joined bid on it." }
                button.btn.primary type="submit" { "Post task" }
            }
        }
    }
}

/// The tasks page again, with `error` shown in the post form beside what was typed:
/// how a refused form from this page is answered.
pub(crate) async fn refused_post(
    state: &AppState,
    principal: &Principal,
    description: String,
    error: &ApiError,
) -> Response {
    let form = PostForm { description, error: Some(error.message.clone()) };
    match tasks_page(state, principal, &TaskParams::default(), &form).await {
        Ok(markup) => {
            let mut response = html_page(markup);
            *response.status_mut() = error.status;
            response
        }
        Err(e) => axum::response::IntoResponse::into_response(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tab_links_keep_the_filters_and_drop_the_page() {
        let q = TaskQuery { agent_id: Some("a b".into()), q: Some("x&y".into()), limit: 50, ..TaskQuery::default() };
        assert_eq!(
            href("/swarm/tasks", &q, Some(BoardStatus::Failed), None),
            "/swarm/tasks?status=failed&agent_id=a%20b&q=x%26y"
        );
        assert_eq!(href("/swarm/tasks", &TaskQuery { limit: 50, ..TaskQuery::default() }, None, None), "/swarm/tasks");
        let day = TaskQuery { recent: Some(Recent::before(Within::Day, 0)), ..q.clone() };
        assert_eq!(
            href("/swarm/tasks", &day, Some(BoardStatus::Failed), None),
            "/swarm/tasks?status=failed&agent_id=a%20b&q=x%26y&within=day"
        );
        let chips = windows(&TaskQuery { status: Some(BoardStatus::Failed), ..day }).into_string();
        assert!(
            chips.contains(r#"href="/swarm/tasks?status=failed&amp;agent_id=a%20b&amp;q=x%26y" data-within="""#),
            "{chips}"
        );
        assert!(
            chips.contains(r#"href="/swarm/tasks?status=failed&amp;agent_id=a%20b&amp;q=x%26y&amp;within=week""#),
            "{chips}"
        );
        assert!(chips.contains(r#"aria-current="page" data-within="day""#), "{chips}");
        assert_eq!(title_case("failed"), "Failed");
    }

    #[test]
    fn a_refused_post_shows_its_error_in_the_form() {
        let html = post_form(&PostForm {
            description: "<b>x</b>".into(),
            error: Some("description must not be empty".into()),
        })
        .into_string();
        assert!(html.contains(r#"role="alert""#) && html.contains("must not be empty"), "{html}");
        assert!(html.contains("&lt;b&gt;x&lt;/b&gt;"), "what was typed comes back escaped: {html}");
    }
}
