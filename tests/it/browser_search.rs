//! The events page's search box and chart range in headless Chromium, at 375 and
//! 1 400 px: a person logs in through the form, types a search, sees only the
//! matches, takes the CSV export of them, and switches the chart to the last day.

use serde_json::json;

use crate::chromium::Browser;
use crate::harness::spawn_app;
use crate::search::{indexed_up_to, post_disk_events};

const DESKTOP: (u32, u32) = (1400, 1000);
const PHONE: (u32, u32) = (375, 800);

/// The seqs of the log's rows, top to bottom.
const ROWS: &str = "return [...document.querySelectorAll('ol.feed--log > li')].map(li => Number(li.dataset.seq))";

#[tokio::test]
async fn a_person_searches_the_log_exports_the_matches_and_charts_the_last_day() {
    let app = spawn_app().await;
    let head = post_disk_events(&app).await;
    indexed_up_to(&app, head).await;
    let base = format!("http://{}", app.addr);
    for (width, height) in [DESKTOP, PHONE] {
        let browser = Browser::start(width, height).await;
        browser.login(&base, &app.admin).await;
        browser.goto(&format!("{base}/swarm/events")).await;
        browser.wait_for("the chart", "document.querySelector('#chart .uplot')").await;
        assert_eq!(browser.eval(ROWS).await, json!([6, 5, 4, 3, 2, 1]), "every event before searching");

        browser.type_into("input[name='q']", "disk full").await;
        browser.click("form.filters button[type='submit']").await;
        browser.wait_for("the search's results", "new URLSearchParams(location.search).get('q') === 'disk full'").await;
        browser.wait_for("the chart", "document.querySelector('#chart .uplot')").await;
        assert_eq!(browser.eval(ROWS).await, json!([6, 4, 2, 1]), "only the matches, newest first");
        let value = browser.eval("return document.querySelector(\"input[name='q']\").value").await;
        assert_eq!(value, json!("disk full"), "the box keeps the search");

        // The CSV link carries the search; what it downloads is the matches alone.
        let href = browser.eval("return document.querySelector(\"nav.export a[href*='format=csv']\").href").await;
        let href = href.as_str().unwrap().to_owned();
        assert!(href.contains("q=disk%20full"), "{href}");
        browser
            .eval("fetch(document.querySelector(\"nav.export a[href*='format=csv']\").href).then(r => r.text()).then(t => { window.__csv = t; })")
            .await;
        browser.wait_for("the CSV download", "typeof window.__csv === 'string'").await;
        let csv = browser.eval("return window.__csv").await;
        let rows: Vec<&str> = csv.as_str().unwrap().lines().skip(1).collect();
        assert_eq!(rows.iter().map(|r| r.split(',').next().unwrap()).collect::<Vec<_>>(), ["1", "2", "4", "6"]);

        browser.click("nav.chart-range a[title='last day']").await;
        browser
            .wait_for("the day's chart", "new URLSearchParams(location.search).get('chart') === 'day' && document.querySelector('#chart .uplot')")
            .await;
        assert!(browser.text("#chart-title").await.contains("last day"));
        assert_eq!(browser.eval(ROWS).await, json!([6, 4, 2, 1]), "switching the chart keeps the search");
        let fits =
            browser.eval("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]").await;
        let shot = browser.screenshot(&format!("events-search-{width}")).await;
        assert!(fits[0].as_u64() <= fits[1].as_u64(), "scrolls sideways at {width}px: {fits} (see {})", shot.display());
        browser.close().await;
    }
    app.stop().await;
}
