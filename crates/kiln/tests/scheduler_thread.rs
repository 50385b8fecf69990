//! The scheduling pass runs beside the control loop (issue 19): while a
//! long pass is in progress, the loop still answers. A test-only delay
//! (`KILN_TEST_PASS_DELAY_MS`) makes each pass sleep before it plans, so a
//! pass is long without 10k fake nodes.

mod common;

use std::time::{Duration, Instant};

use common::{Server, DEFAULT_ARGS};

/// Each pass sleeps this long first: large next to the few milliseconds a
/// stop takes to answer, so the margins below are not wall-clock bets.
const PASS_DELAY_MS: u64 = 3000;

#[test]
fn a_stop_is_answered_while_a_long_pass_is_in_progress() {
    let delay = PASS_DELAY_MS.to_string();
    let s = Server::start_env(DEFAULT_ARGS, &[("KILN_TEST_PASS_DELAY_MS", delay.as_str())]);

    // One delayed pass starts the first job.
    let first = s.submit("first", "name: first\ngpus: 1\ncommand: 'exec sleep 300'\n");
    s.wait_state(&first, "RUNNING", 60);

    // The second needs every GPU: its pass (now sleeping) sees the first
    // holding one, so it waits; the pass after the first has ended starts it.
    let second = s.submit(
        "second",
        "name: second\ngpus: 4\ncommand: 'exec sleep 300'\n",
    );
    let asked = Instant::now();
    let (status, stopped) = s.api("POST", &format!("/jobs/{first}/stop"), None);
    let answered = asked.elapsed();
    assert_eq!(status, 200, "{stopped}");
    assert!(
        matches!(stopped["state"].as_str(), Some("STOPPING" | "STOPPED")),
        "{stopped}"
    );
    assert!(
        answered < Duration::from_millis(PASS_DELAY_MS * 2 / 3),
        "the stop took {answered:?}: it waited for the pass"
    );

    // The pass was still in progress when the stop was answered: the
    // second job has no scheduler reason yet.
    let j = s.job(&second);
    assert_eq!(j["state"], "WAITING", "{j}");
    assert!(j["pendingDetail"].is_null(), "a pass already ended: {j}");

    // That pass's plan, computed while the first job held a GPU, keeps the
    // second waiting with a reason; the next pass starts it.
    s.wait_job(&second, 30, "given a scheduler reason", |j| {
        j["state"] == "RUNNING" || !j["pendingDetail"].is_null()
    });
    s.wait_state(&first, "STOPPED", 30);
    let j = s.wait_state(&second, "RUNNING", 30);
    assert!(
        asked.elapsed() >= Duration::from_millis(PASS_DELAY_MS),
        "the second job started before a delayed pass could end: {j}"
    );
    let (status, v) = s.api("POST", &format!("/jobs/{second}/stop"), None);
    assert_eq!(status, 200, "{v}");
    s.wait_state(&second, "STOPPED", 30);
}
