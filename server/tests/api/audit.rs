//! The audit and offline surface found wanting by the audit review: the
//! `/x/v1` verify endpoint, bundles exported by one server and imported into
//! another (`logbook_server::offline::import`), and slices. Each test asserts
//! what `docs/extensions.md` promises and fails until the server does it.

use crate::harness::{Harness, id};

fn agent_message(text: &str) -> logbook_core::Event {
    use logbook_core::event::{AgentMessage, ContentBlock};
    logbook_core::Event::AgentMessage(AgentMessage { content: vec![ContentBlock::Text { text: text.to_owned() }] })
}

#[tokio::test]
async fn the_verify_endpoint_reports_a_tampered_record_as_a_break_not_a_500() {
    // Goal: `GET /x/v1/sessions/{id}/verify` returns "the chain's
    // verification report (records, intact prefix, every break with its seq
    // and kind)" (docs/extensions.md, Verifiable audit). `audit::verify_session`
    // reads the log through `Read::read`, which refuses a record whose bytes
    // fail their hash; the handler turns that into a bare 500 `api_error`,
    // so the one endpoint meant to report tampering can never say where the
    // log was changed. `logbook verify --data` (which walks the log) names the
    // seq; the endpoint must too.
    // Method: 200 small events in a session; one byte of record 5's body
    // flipped in the write-ahead log; the tail cache emptied so reads go to
    // the log; then verify.
    use logbook_core::{Event, Seq, SessionId};
    use logbook_store::engine::Engine as _;
    use logbook_store::wal;

    let h = Harness::new();
    let session = h.quick_session().await;
    let events: Vec<Event> = (0..200).map(|k| agent_message(&format!("message number {k}"))).collect();
    h.inject(&session, events);
    let sid: SessionId = id(&session).parse().unwrap();
    let store = h.state.store();
    let intact = h.get(&format!("/x/v1/sessions/{sid}/verify")).await.ok();
    assert_eq!(intact["valid"], true, "{intact}");

    let location = store.locate(sid, Seq::new(5)).unwrap().expect("record 5 is stored by the session");
    let segment = store.engine().log_dir().open_segment(wal::segment_of(location.lsn), false).unwrap();
    let at = wal::offset_of(location.lsn) + wal::RECORD_HEADER_BYTES as u64 + 3;
    let mut byte = [0u8];
    segment.read_exact_at(&mut byte, at).unwrap();
    segment.write_at(&[byte[0] ^ 0x01], at).unwrap();
    store.clear_caches();

    let resp = h.get(&format!("/x/v1/sessions/{sid}/verify")).await;
    assert_eq!(
        resp.status.as_u16(),
        200,
        "verify of a session with one tampered record must answer its report (valid: false, a break at seq 5), \
         not {}: {}",
        resp.status,
        resp.text()
    );
    let report = resp.json();
    assert_eq!(report["valid"], false, "{report}");
    assert_eq!(report["breaks"][0]["seq"], 5, "{report}");
}
