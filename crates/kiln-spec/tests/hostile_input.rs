//! Nothing a user sends may panic or take long: arbitrary bytes, mangled
//! versions of every example, wrong types in every field, huge and deeply
//! nested documents, YAML alias bombs. Each either parses or gets errors.
//! Run longer with `PROPTEST_CASES=100000 cargo test --release -p kiln-spec --test hostile_input`.

use std::path::Path;

use kiln_spec::formats::MAX_SPEC_BYTES;
use kiln_spec::{parse, SpecError};
use proptest::prelude::*;
use serde_json::Value;

fn examples() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    [
        "crater/mnist.yaml",
        "openpai/pytorch-ddp.json",
        "openpai/mnist-v2.yaml",
        "kubeflow/pytorch-simple.yaml",
        "kubeflow/pytorch-simple-exported.yaml",
        "ailab/pytorch-distributed.yaml",
    ]
    .iter()
    .map(|rel| std::fs::read(dir.join(rel)).expect("example"))
    .collect()
}

/// A parse result is fine whatever it is, as long as errors say something.
fn check(input: &[u8]) {
    if let Err(e) = parse(input) {
        let issues = e.issues();
        assert!(!issues.is_empty());
        assert!(issues.iter().all(|i| !i.message.is_empty()), "{issues:?}");
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Flip(usize, u8),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec(
        prop_oneof![
            (any::<usize>(), 1usize..20).prop_map(|(a, n)| Edit::Delete(a, n)),
            (
                any::<usize>(),
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 1..8),
                    Just(b": ".to_vec()),
                    Just(b"\n  - ".to_vec()),
                    Just(b"{[".to_vec()),
                    Just(b"&a *a".to_vec()),
                    Just(b"<% $parameters.".to_vec()),
                    Just(b"\"\\u0000\"".to_vec()),
                ]
            )
                .prop_map(|(a, b)| Edit::Insert(a, b)),
            (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Edit::Flip(a, b)),
        ],
        1..6,
    )
}

fn apply(mut doc: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = doc.len().max(1);
        match e {
            Edit::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(doc.len());
                if at < end {
                    doc.drain(at..end);
                }
            }
            Edit::Insert(at, bytes) => {
                let at = at % (doc.len() + 1);
                doc.splice(at..at, bytes.iter().copied());
            }
            Edit::Flip(at, b) => {
                if !doc.is_empty() {
                    let at = at % doc.len();
                    doc[at] = *b;
                }
            }
        }
    }
    doc
}

/// Arbitrary JSON values, to put where a field of the right type should be.
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::btree_map("[a-zA-Z]{1,10}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every path to a value inside `v`, as JSON pointers.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, c)| pointers(c, format!("{at}/{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, c)| pointers(c, format!("{at}/{i}"), out)),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        check(text.as_bytes());
    }

    #[test]
    fn mangled_examples_never_panic(which in 0usize..6, e in edits()) {
        let doc = examples().swap_remove(which);
        check(&apply(doc, &e));
    }

    #[test]
    fn any_value_in_any_field_never_panics(which in 0usize..6, pick in any::<usize>(), v in any_value()) {
        let doc = examples().swap_remove(which);
        let mut tree: Value = serde_norway::from_slice(&doc).expect("examples are valid YAML");
        let mut all = Vec::new();
        pointers(&tree, String::new(), &mut all);
        let target = all[pick % all.len()].clone();
        if let Some(slot) = tree.pointer_mut(&target) {
            *slot = v;
        }
        check(tree.to_string().as_bytes());
    }
}

#[test]
fn ten_megabytes_are_refused_without_parsing() {
    let huge = format!("{{\"jobName\": \"{}\"}}", "a".repeat(10 * 1024 * 1024));
    match parse(huge.as_bytes()) {
        Err(SpecError::TooLarge { max, .. }) => assert_eq!(max, MAX_SPEC_BYTES),
        other => panic!("{other:?}"),
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let json = format!(
        "{{\"extras\": {}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    check(json.as_bytes());
    let yaml = format!(
        "name: x\ncommand: y\nextras: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    check(yaml.as_bytes());
}

/// A body that starts like JSON is read as JSON, and its errors say so: a
/// deep `[[[[...` must not be reported as YAML (the first format that failed
/// is the one the user wrote).
#[test]
fn deep_json_errors_name_json() {
    for body in [
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
        "[".repeat(10_000),
        format!("{{\"jobName\": {}", "[".repeat(10_000)),
        "  [1, 2".to_owned(),
    ] {
        match parse(body.as_bytes()) {
            Err(SpecError::Syntax { format, .. }) => {
                assert_eq!(format, "JSON", "{}", &body[..20.min(body.len())])
            }
            Err(SpecError::Invalid { issues }) => {
                assert!(issues[0].message.contains("mapping"), "{issues:?}")
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn yaml_alias_bombs_are_refused() {
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
    let mut prev = "a";
    for n in names {
        bomb.push_str(&format!(
            "{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
        prev = n;
    }
    bomb.push_str("name: x\ncommand: y\n");
    assert!(parse(bomb.as_bytes()).is_err());
}

#[test]
fn encodings_and_emptiness_are_named() {
    assert!(matches!(
        parse(b"name: \xff\xfe"),
        Err(SpecError::NotUtf8 { offset: 6 })
    ));
    assert!(matches!(parse(b"  \n\t"), Err(SpecError::Empty)));
    assert!(matches!(parse(b""), Err(SpecError::Empty)));
    // A UTF-8 byte-order mark is not an error.
    assert!(parse("\u{feff}name: x\ncommand: y\n".as_bytes()).is_ok());
    // NUL inside strings is refused with the field's path.
    let e = parse(b"{\"name\": \"x\", \"command\": \"a\\u0000b\"}").unwrap_err();
    assert_eq!(e.issues()[0].path, "command");
}

#[test]
fn several_documents_in_one_file_are_an_error() {
    check(b"name: a\ncommand: x\n---\nname: b\ncommand: y\n");
    assert!(parse(b"name: a\ncommand: x\n---\nname: b\ncommand: y\n").is_err());
}

/// An image becomes an argument of the container engine, which runs as
/// root: a name that reads as an option (`--privileged`), or holds spaces
/// or line breaks, is refused at submit, in every format.
#[test]
fn an_image_that_reads_as_an_option_is_refused() {
    for bad in [
        "--privileged",
        "-v=/:/host",
        "alpine --privileged",
        "a\nb",
        "",
        "../x",
    ] {
        let doc = serde_json::json!({"name": "x", "image": bad, "command": "true"}).to_string();
        let issues = parse(doc.as_bytes()).expect_err(bad).issues().to_vec();
        assert!(
            issues.iter().any(|i| i.path == "image"),
            "{bad:?}: {issues:?}"
        );
        let doc = serde_json::json!({"jobName": "x", "image": bad, "taskRoles": [{"name": "a", "taskNumber": 1, "cpuNumber": 1, "memoryMB": 1000, "command": "true"}]}).to_string();
        assert!(parse(doc.as_bytes()).is_err(), "OpenPAI v1 {bad:?}");
    }
    for good in [
        "pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime",
        "ghcr.io/alice/train@sha256:0123abcd",
        "registry.lab:5000/x/y:z",
        "ubuntu",
        "ubuntu:22.04",
        "localhost/kiln-test/busybox",
    ] {
        let doc = serde_json::json!({"name": "x", "image": good, "command": "true"}).to_string();
        assert!(parse(doc.as_bytes()).is_ok(), "{good}");
    }
}
