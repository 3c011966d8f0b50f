//! Server-rendered HTML: the page shell and the event row.
//!
//! Written with maud, whose `html!` escapes every interpolated value: no event field
//! (type, source, ids, data) ever reaches a page as markup. Shared by the pages
//! (`http::pages`) and by the HTML encoders of the transports (`/ws/html`, and SSE and
//! long-poll with `format=html`), so an event looks the same however it arrived. It
//! renders what it is given; it fetches nothing.

pub(crate) mod event;
pub(crate) mod layout;
