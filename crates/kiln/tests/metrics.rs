//! Watching jobs: CPU and memory series of a busy task, `kiln top`, and
//! kiln's own numbers at /metrics read by a Prometheus text parser.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

/// The newest value of a series, if it has one.
fn last(v: &Value, task: &str, name: &str) -> Option<f64> {
    v["series"]
        .as_array()?
        .iter()
        .find(|s| s["task"] == task && s["name"] == name)?["points"]
        .as_array()?
        .last()?["value"]
        .as_f64()
}

#[test]
fn a_busy_task_shows_its_cpu_and_memory() {
    let s = Server::start_with(&[
        "--cpus",
        "4",
        "--memory",
        "8Gi",
        "--stop-grace",
        "1",
        "--no-sandbox",
        "--sample-every",
        "1",
    ]);
    // One core spinning, and about 100 MB held in a bash variable.
    let id = s.submit(
        "busy",
        "name: busy\ncommand: |\n  x=$(head -c 100000000 /dev/zero | tr '\\0' a)\n  echo held\n  while :; do :; done\n",
    );
    s.wait_state(&id, "RUNNING", 30);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (cpu, mem) = loop {
        let (status, v) = s.api("GET", &format!("/jobs/{id}/metrics?last=true"), None);
        assert_eq!(status, 200, "{v}");
        let cpu = last(&v, "main-0", "cpu").unwrap_or(0.0);
        let mem = last(&v, "main-0", "memory").unwrap_or(0.0);
        if cpu > 0.5 && mem > 90e6 {
            break (cpu, mem);
        }
        assert!(
            Instant::now() < deadline,
            "no load seen: cpu={cpu} memory={mem}: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(cpu < 1.5, "one spinning core, not {cpu}");
    assert!(mem < 1e9, "{mem}");
    let top = s.ok(&["top", &id]);
    assert!(
        top.contains("main-0") && top.contains("MiB"),
        "kiln top: {top}"
    );
    // Filters: one name, a time window that holds nothing.
    let (_, v) = s.api("GET", &format!("/jobs/{id}/metrics?name=memory"), None);
    assert!(v["series"].as_array().is_some_and(|a| a.len() == 1), "{v}");
    let (_, v) = s.api("GET", &format!("/jobs/{id}/metrics?from=1&to=2"), None);
    assert!(
        v["series"].as_array().is_some_and(|a| a
            .iter()
            .all(|s| s["points"].as_array().is_some_and(Vec::is_empty))),
        "{v}"
    );
    s.ok(&["stop", &id]);
    // The series outlive the job.
    s.wait_state(&id, "STOPPED", 30);
    let (_, v) = s.api("GET", &format!("/jobs/{id}/metrics"), None);
    assert!(last(&v, "main-0", "cpu").is_some(), "{v}");
}

#[test]
fn prometheus_reads_kiln_s_own_numbers() {
    let s = Server::start();
    let ok = s.submit("ok", "name: ok\ncommand: 'true'\n");
    s.wait_state(&ok, "SUCCEEDED", 30);
    let hold = s.submit("hold", "name: hold\ngpus: 3\ncommand: sleep 30\n");
    s.wait_state(&hold, "RUNNING", 30);
    let wait = s.submit("wait", "name: wait\ngpus: 2\ncommand: 'true'\n");
    // Until the scheduler has looked at it, it is not in the queue yet.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !s.job(&wait)["pendingReason"]
        .as_str()
        .is_some_and(|r| r.contains("GPU"))
    {
        assert!(Instant::now() < deadline, "{}", s.job(&wait));
        std::thread::sleep(Duration::from_millis(20));
    }
    // Anyone can scrape, as Prometheus does, without a token.
    let text = ureq::get(&format!("{}/metrics", s.url))
        .call()
        .expect("scraped")
        .body_mut()
        .read_to_string()
        .expect("text");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition");
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        scrape
            .samples
            .iter()
            .find(|m| m.metric == name && label.is_none_or(|(k, v)| m.labels.get(k) == Some(v)))
            .and_then(|m| match m.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => Some(v),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{name} {label:?} missing:\n{text}"))
    };
    assert_eq!(value("kiln_jobs", Some(("state", "SUCCEEDED"))), 1.0);
    assert_eq!(value("kiln_jobs", Some(("state", "RUNNING"))), 1.0);
    assert_eq!(value("kiln_jobs", Some(("state", "WAITING"))), 1.0);
    assert_eq!(value("kiln_queue_length", None), 1.0);
    assert_eq!(value("kiln_gpus", None), 4.0);
    assert_eq!(value("kiln_gpus_allocated", None), 3.0);
    let histogram_count = |name: &str| {
        scrape
            .samples
            .iter()
            .filter(|m| m.metric == name)
            .map(|m| match &m.value {
                prometheus_parse::Value::Histogram(h) => {
                    h.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                _ => 0.0,
            })
            .sum::<f64>()
    };
    assert!(
        histogram_count("kiln_schedule_pass_seconds") >= 1.0,
        "{text}"
    );
    assert!(histogram_count("kiln_api_request_seconds") >= 3.0, "{text}");
    assert!(text.contains("route=\"/api/v1/jobs\""), "{text}");
    s.ok(&["stop", &hold]);
    s.ok(&["stop", &wait]);
}
