//! The token classifier in the request path: names stay local, failures fail closed.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn name_only_prompt_under_hipaa_stays_local() {
    let veil = Veil::start_with(with_classifier).await;
    for text in [
        "Can you summarize the discharge plan for Margaret Okonkwo?",
        "pt is mary jo ellison, pls draft a note to her family",
        "PATIENT DANIEL KOWALCZYK TOLERATED PROCEDURE WELL",
    ] {
        let resp = veil.chat(KEY_HIPAA, user(text)).await;
        assert_eq!(resp.headers()["x-veil-action"], "local", "{text}");
        assert_eq!(resp.status(), 503, "{text}");
    }
    assert_eq!(
        veil.mock.hits(),
        0,
        "names under HIPAA never reach the cloud"
    );
    let rows = veil.wait_rows(6).await;
    let d: Value = serde_json::from_str(&rows[0].body).unwrap();
    assert_eq!(d["entities"][0]["entity"], "PERSON");
    assert!(
        d["detectors"].as_array().unwrap().len() == 2,
        "{}",
        d["detectors"]
    );
}

#[tokio::test]
async fn a_name_read_as_an_organization_never_reaches_the_cloud_under_hipaa() {
    // v9 reads the surname pair as an ORGANIZATION (raw 0.94; a law firm's name to the model), not
    // as two PERSONs; under HIPAA organizations are redacted too, so the names go out as a
    // placeholder or the request stays local — never raw. (v8 read "Okafor, Lindqvist and
    // Brandt" that way; v9 reads it as PERSONs.) Invented names.
    let veil = Veil::start_with(with_classifier).await;
    let resp = veil
        .chat(KEY_HIPAA, user("Send the file to Brandt & Lindqvist."))
        .await;
    let action = resp.headers()["x-veil-action"].to_str().unwrap().to_owned();
    assert!(action == "redact" || action == "local", "{action}");
    for sent in veil.mock.bodies() {
        assert!(
            !sent.contains("Lindqvist") && !sent.contains("Brandt"),
            "{sent}"
        );
    }
}

#[tokio::test]
async fn weak_names_count_for_the_policy() {
    // The model reports "Tove" at 0.43 and "Gülter" at 0.34 (raw, v9; tests/classifier.rs pins
    // both) — above its PERSON threshold of 0.1, below the rules' min_score of 0.5 (HIPAA's
    // default) and 0.6. Classifier scores are reported on the policy scale (the threshold maps to
    // 0.5), so both names are acted on: kept local under HIPAA, redacted under the default
    // policy. Before, both prompts went to the cloud with the name. Invented names.
    let veil = Veil::start_with(with_classifier).await;
    let resp = veil
        .chat(KEY_HIPAA, user("move Tove to the late shift"))
        .await;
    assert_eq!(resp.headers()["x-veil-action"], "local");
    assert_eq!(
        veil.mock.hits(),
        0,
        "a name under HIPAA never reaches the cloud"
    );
    let resp = veil
        .chat(KEY_DEFAULT, user("move Gülter to the late shift"))
        .await;
    assert_eq!(resp.headers()["x-veil-action"], "redact");
    assert_eq!(resp.status(), 200);
    assert_eq!(veil.mock.hits(), 1);
    let sent = &veil.mock.bodies()[0];
    assert!(!sent.contains("Gülter"), "{sent}");
}

#[tokio::test]
async fn clean_clinical_question_is_not_flagged() {
    let veil = Veil::start_with(with_classifier).await;
    let resp = veil
        .chat(
            KEY_HIPAA,
            user("What is the usual starting dose of metoprolol for atrial fibrillation?"),
        )
        .await;
    assert_eq!(resp.headers()["x-veil-action"], "allow");
    assert_eq!(resp.status(), 200);
    assert_eq!(veil.mock.hits(), 1);
    let ready = veil.readyz().await;
    assert_eq!(ready["classifier"]["status"], "ready", "{ready}");
    assert!(
        ready["classifier"]["model"]
            .as_str()
            .unwrap()
            .starts_with("veil-ner-"),
        "{ready}"
    );
}

#[tokio::test]
async fn classifier_timeout_applies_on_detector_error() {
    let veil = Veil::start_with(|c| {
        with_classifier(c);
        c.detect.timeout_ms = 1;
    })
    .await;
    let long = "The patient walked to the cafeteria with her daughter and ate lunch. ".repeat(300);
    let resp = veil.chat(KEY_DEFAULT, user(&long)).await;
    // default.toml: on_detector_error = "block"
    assert_eq!(resp.status(), 403);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("veil.detector_error"),
        "{err}"
    );
    assert_eq!(veil.mock.hits(), 0);
}

#[tokio::test]
async fn corrupt_classifier_refuses_to_start_or_keeps_everything_local() {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "model.onnx",
        "tokenizer.json",
        "manifest.toml",
        "drugs.txt",
        "words.txt",
        "near_names.txt",
    ] {
        std::fs::copy(classifier_dir().join(f), dir.path().join(f)).unwrap();
    }
    let model = dir.path().join("model.onnx");
    let mut bytes = std::fs::read(&model).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&model, bytes).unwrap();

    let mock = Mock::start().await;
    let db = tempfile::tempdir().unwrap();
    let mut c = config(&mock, db.path());
    with_classifier(&mut c);
    c.classifier.dir = dir.path().to_owned();
    let err = veil::server::start(c.clone(), env)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("checksum mismatch"), "{err}");

    // Configured to start anyway: every request is unscannable, so it stays local.
    let path = dir.path().to_owned();
    let veil = Veil::start_with(move |c| {
        with_classifier(c);
        c.classifier.dir = path;
        c.classifier.on_missing = veil::config::OnMissing::Unscannable;
    })
    .await;
    let resp = veil.chat(KEY_DEFAULT, user("hello")).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-veil-action"], "local");
    assert_eq!(veil.mock.hits(), 0);
    let rows = veil.wait_rows(2).await;
    assert!(rows[0].body.contains("classifier_unavailable"));
    let ready = veil.readyz().await;
    assert_eq!(ready["classifier"]["status"], "unavailable", "{ready}");
    assert!(
        ready["classifier"]["reason"]
            .as_str()
            .unwrap()
            .contains("checksum mismatch"),
        "{ready}"
    );
}

#[tokio::test]
async fn names_are_redacted_under_default_policy_and_restored() {
    let veil = Veil::start_with(with_classifier).await;
    let body = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "Write a short thank-you note to Priya Raghunathan for the flowers."}]});
    let resp = veil.chat(KEY_DEFAULT, body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-veil-action"], "redact");
    let sent = &veil.mock.bodies()[0];
    assert!(
        !sent.contains("Priya") && !sent.contains("Raghunathan"),
        "{sent}"
    );
    let answer: Value = resp.json().await.unwrap();
    assert!(
        answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("Priya Raghunathan")
    );
}

#[tokio::test]
async fn text_in_a_script_the_classifier_cannot_read_stays_local() {
    let veil = Veil::start_with(with_classifier).await;
    let resp = veil
        .chat(
            KEY_HIPAA,
            user("Пациент Иван Петров поступил в больницу вчера вечером."),
        )
        .await;
    assert_eq!(resp.headers()["x-veil-action"], "local");
    assert_eq!(veil.mock.hits(), 0);
    let rows = veil.wait_rows(2).await;
    assert!(rows[0].body.contains("unsupported_script"));
}

/// Entries in the default policy's segment cache for the harness's tenant.
fn cache_entries(veil: &Veil) -> usize {
    let snap = veil.running.as_ref().unwrap().state.snapshot.load();
    let set = snap.policies.get("default").unwrap();
    set.detectors.cache.as_ref().unwrap().len("test")
}

#[tokio::test]
async fn answers_are_read_while_idle_so_the_next_turn_reads_only_its_new_question() {
    let veil = Veil::start_with(|c| {
        with_classifier(c);
        c.detect.cache_entries = 64;
    })
    .await;
    let entries = || cache_entries(&veil);
    // Invented names; the mock echoes the last question (as text, or as a tool call's
    // arguments when the request has tools), which veil restores in the answer. Turns: plain,
    // streamed, plain, then a streamed tool call and a plain one after the tool's result.
    let turns = [
        (
            "Please summarise the visit of Anneliese Kowalczyk at Briarwood Clinic.",
            false,
            false,
        ),
        (
            "Which follow-up does a knee replacement need in the first month?",
            true,
            false,
        ),
        (
            "Is physiotherapy covered for a patient living in Dunmore?",
            false,
            false,
        ),
        ("Look up the chart of Anneliese Kowalczyk.", true, true),
        ("And her last blood pressure reading?", false, true),
    ];
    let tools = json!([{"type": "function", "function": {"name": "echo",
        "description": "Echoes its input.", "parameters": {"type": "object"}}}]);
    let mut messages: Vec<Value> = Vec::new();
    for (turn, &(question, stream, with_tools)) in turns.iter().enumerate() {
        messages.push(json!({"role": "user", "content": question}));
        let mut body = json!({"model": "gpt-4o-mini", "messages": messages, "stream": stream});
        if with_tools {
            body["tools"] = tools.clone();
        }
        let resp = veil.chat(KEY_DEFAULT, body).await;
        assert_eq!(resp.status(), 200, "turn {turn}");
        let answer = match (stream, with_tools) {
            (false, _) => {
                let body: Value = resp.json().await.unwrap();
                body["choices"][0]["message"].clone()
            }
            (true, false) => {
                json!({"role": "assistant", "content": streamed_text(&sse_data(resp).await)})
            }
            (true, true) => {
                // Put together from the deltas, as a client does.
                let (mut id, mut name, mut args) = (String::new(), String::new(), String::new());
                for e in sse_data(resp).await {
                    let Ok(v) = serde_json::from_str::<Value>(&e) else {
                        continue;
                    };
                    for c in v["choices"][0]["delta"]["tool_calls"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        id.push_str(c["id"].as_str().unwrap_or_default());
                        name.push_str(c["function"]["name"].as_str().unwrap_or_default());
                        args.push_str(c["function"]["arguments"].as_str().unwrap_or_default());
                    }
                }
                json!({"role": "assistant", "content": null, "tool_calls": [{"id": id,
                    "type": "function", "function": {"name": name, "arguments": args}}]})
            }
        };
        assert!(answer.to_string().contains(question), "{answer}");
        // One entry per message read, one for the tool definitions once sent, and one for the
        // answer, read once the classifier is idle: had the answer not been read as the next
        // turn reads it, that turn would add two.
        let want = messages.len() + 1 + usize::from(turns[..=turn].iter().any(|t| t.2));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while entries() < want && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(entries(), want, "turn {turn}");
        let call_id = answer["tool_calls"][0]["id"].as_str().map(str::to_owned);
        messages.push(answer);
        if let Some(id) = call_id {
            messages.push(json!({"role": "tool", "tool_call_id": id, "content": "chart found"}));
        }
    }
    for sent in veil.mock.bodies() {
        assert!(!sent.contains("Kowalczyk"), "{sent}");
    }
}

#[tokio::test]
async fn an_answer_over_8_kb_is_left_for_the_next_turn() {
    let veil = Veil::start_with(|c| {
        with_classifier(c);
        c.detect.cache_entries = 64;
    })
    .await;
    // The mock echoes the question, so the answer is as long: over 8 KB, it would hold a
    // classifier session long enough to delay requests.
    let question = "Summarise the guideline on fluid balance after surgery. ".repeat(160);
    let resp = veil
        .chat(
            KEY_DEFAULT,
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": question}]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .len()
            > 8 * 1024
    );
    // Reading it would take well under a second; wait five.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(cache_entries(&veil), 1, "only the question was read");
}
