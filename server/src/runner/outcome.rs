//! Grading an outcome (`user.define_outcome`): what the grader is asked and
//! how its answer becomes a verdict. The runner makes the call
//! (`Task::evaluate_outcome`); everything here is pure.
//!
//! The grader is the session's model with its own system prompt, shown the
//! agent's conversation as it stands (tool calls and results included: the
//! deliverables are what the agent did and said; the outcome's blocks are in
//! it, or stand after its summary), then the outcome's description again
//! (the rubric only if the conversation lacks it: a rubric may be 262,144
//! characters), and asked for a first line `VERDICT: <result>` and an
//! explanation. Its call and answer stay out of the agent's context;
//! only the verdict's explanation reaches the agent
//! (`logbook_replay::context`), so that it can revise.

use serde_json::{Value, json};

use logbook_core::event::{OutcomeEvaluationResult, UserDefineOutcome};
use logbook_replay::context::outcome_blocks;
use logbook_replay::machine::{REFUSAL, is_last_evaluation};

use crate::model::ModelError;

/// The grader's instructions, sent as the system prompt of its call.
pub(super) const GRADER_SYSTEM: &str = "You are a strict, fair grader. An agent worked on a task for a user; the \
conversation below shows what it did: its messages, its tool calls and their results. You do not continue \
the agent's work and you call no tools. Judge only by what the conversation shows, against the outcome \
(restated at its end) and its rubric (given in the conversation or at its end).";

/// `max_tokens` of a grading call: a verdict with its explanation.
pub(super) const GRADER_MAX_TOKENS: u32 = 4_096;
/// Attempts of a grading call that keeps failing transiently.
pub(super) const GRADER_MAX_ATTEMPTS: u32 = 3;
/// Characters of the grader's explanation kept in the log (and shown to the
/// agent); beyond them it is cut.
pub(super) const MAX_EXPLANATION_CHARS: usize = 20_000;
/// What opens the verdict line.
pub(super) const VERDICT_PREFIX: &str = "VERDICT:";

/// A grader's answer, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Verdict {
    pub(super) result: OutcomeEvaluationResult,
    pub(super) explanation: String,
}

/// The grader's conversation: the agent's, then the instruction (joined to
/// the last message when that is the user's, as the API wants roles to
/// alternate).
pub(super) fn grader_messages(
    mut messages: Vec<Value>,
    defined: Option<&UserDefineOutcome>,
    iteration: u32,
    max_iterations: u32,
) -> Vec<Value> {
    let mut blocks = vec![json!({"type": "text", "text": format!(
        "<grading>\nThe agent's turn is over. Grade its work (evaluation {} of at most {max_iterations}).\n\n\
         The outcome the user asked for:\n{}\n</grading>",
        iteration + 1,
        defined.map_or("(the outcome's description is not in the log)", |d| d.description.as_str()),
    )})];
    if let Some(rubric) = defined.and_then(|d| outcome_blocks(d).pop())
        && !messages.iter().any(|m| m.get("content").and_then(Value::as_array).is_some_and(|c| c.contains(&rubric)))
    {
        blocks.push(rubric);
    }
    blocks.push(json!({"type": "text", "text": format!(
        "Answer with a first line that is exactly one of:\n\
         {VERDICT_PREFIX} satisfied\n{VERDICT_PREFIX} needs_revision\n{VERDICT_PREFIX} failed\n\
         Use `satisfied` when every criterion of the rubric is met; `needs_revision` when some are not (then \
         name each unmet criterion and what the agent must change); `failed` only when the rubric cannot \
         apply to this work at all. After the first line, explain briefly."
    )}));
    match messages.last_mut() {
        Some(last) if last.get("role").and_then(Value::as_str) == Some("user") => {
            if let Some(Value::Array(content)) = last.get_mut("content") {
                content.extend(blocks);
            }
        }
        Some(_) | None => messages.push(json!({"role": "user", "content": blocks})),
    }
    messages
}

/// The verdict of a grader's answer (its text blocks). An answer with no
/// verdict line (or a refusal) is `failed`, saying so: guessing would either
/// end the work unjudged or make the agent revise for no reason.
pub(super) fn read_verdict(content: &[Value], stop_reason: Option<&str>) -> Verdict {
    let text = crate::model::text_of(content);
    if stop_reason == Some(REFUSAL) {
        return failed(format!("The grader refused to grade this work. {}", cut(&text)));
    }
    for (index, line) in text.lines().enumerate() {
        let line = line.trim().trim_matches(|c| c == '*' || c == '`').trim();
        let Some(rest) = strip_prefix_ignore_case(line, VERDICT_PREFIX) else { continue };
        let word = rest.trim().trim_matches(|c: char| !c.is_ascii_alphabetic() && c != '_').to_ascii_lowercase();
        let result = match word.as_str() {
            "satisfied" => OutcomeEvaluationResult::Satisfied,
            "needs_revision" => OutcomeEvaluationResult::NeedsRevision,
            "failed" => OutcomeEvaluationResult::Failed,
            _ => continue,
        };
        let explanation: Vec<&str> = text.lines().skip(index + 1).collect();
        let explanation = explanation.join("\n").trim().to_owned();
        return Verdict { result, explanation: cut(&explanation) };
    }
    failed(format!("The grader's answer held no verdict line ({VERDICT_PREFIX} ...): {}", cut(&text)))
}

/// The verdict when the grader could not be reached (retries used up, or an
/// error not worth retrying): the outcome cannot be judged, so it is over.
pub(super) fn unreachable_grader(error: &ModelError) -> Verdict {
    failed(format!("The grader could not be reached: {error}"))
}

/// The recorded result of evaluation `iteration` (0-based): a revision asked
/// for at the last allowed evaluation is `max_iterations_reached`.
pub(super) fn result_at(
    result: OutcomeEvaluationResult,
    iteration: u32,
    max_iterations: u32,
) -> OutcomeEvaluationResult {
    match result {
        OutcomeEvaluationResult::NeedsRevision if is_last_evaluation(iteration, max_iterations) => {
            OutcomeEvaluationResult::MaxIterationsReached
        }
        OutcomeEvaluationResult::NeedsRevision
        | OutcomeEvaluationResult::Satisfied
        | OutcomeEvaluationResult::MaxIterationsReached
        | OutcomeEvaluationResult::Failed
        | OutcomeEvaluationResult::Interrupted => result,
    }
}

fn failed(explanation: String) -> Verdict {
    Verdict { result: OutcomeEvaluationResult::Failed, explanation }
}

fn cut(text: &str) -> String {
    match text.char_indices().nth(MAX_EXPLANATION_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

fn strip_prefix_ignore_case<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let head = line.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &line[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> Vec<Value> {
        vec![json!({"type": "text", "text": t})]
    }

    #[test]
    fn verdict_lines_are_read_leniently_and_explanations_kept() {
        let verdict = read_verdict(&text("**VERDICT: needs_revision**\n- the README lacks a usage section"), None);
        assert_eq!(verdict.result, OutcomeEvaluationResult::NeedsRevision);
        assert_eq!(verdict.explanation, "- the README lacks a usage section");
        let verdict = read_verdict(&text("Let me check.\nverdict: Satisfied.\nAll criteria met."), None);
        assert_eq!(verdict.result, OutcomeEvaluationResult::Satisfied);
        assert_eq!(verdict.explanation, "All criteria met.");
        assert_eq!(read_verdict(&text("VERDICT: failed\nnot a report"), None).result, OutcomeEvaluationResult::Failed);
    }

    #[test]
    fn an_answer_without_a_verdict_or_a_refusal_fails_the_outcome_saying_why() {
        let verdict = read_verdict(&text("It looks fine to me."), None);
        assert_eq!(verdict.result, OutcomeEvaluationResult::Failed);
        assert!(verdict.explanation.contains("no verdict line") && verdict.explanation.contains("fine to me"));
        let verdict = read_verdict(&text("VERDICT: satisfied"), Some("refusal"));
        assert_eq!(verdict.result, OutcomeEvaluationResult::Failed);
        let verdict = read_verdict(&text(&format!("VERDICT: needs_revision\n{}", "x".repeat(50_000))), None);
        assert_eq!(verdict.explanation.chars().count(), MAX_EXPLANATION_CHARS + 1);
    }

    #[test]
    fn a_revision_asked_at_the_last_evaluation_reaches_the_maximum() {
        use OutcomeEvaluationResult::{MaxIterationsReached, NeedsRevision, Satisfied};
        assert_eq!(result_at(NeedsRevision, 0, 3), NeedsRevision);
        assert_eq!(result_at(NeedsRevision, 2, 3), MaxIterationsReached);
        assert_eq!(result_at(NeedsRevision, 0, 1), MaxIterationsReached);
        assert_eq!(result_at(Satisfied, 2, 3), Satisfied);
    }

    #[test]
    fn the_instruction_joins_a_last_user_message_and_carries_the_rubric_once() {
        let defined = UserDefineOutcome {
            outcome_id: logbook_core::OutcomeId::from_parts(1, 1),
            description: "a README".into(),
            rubric: logbook_core::event::Rubric::Text { content: "has a usage section".into() },
            max_iterations: Some(3),
        };
        let after_answer = grader_messages(
            vec![
                json!({"role": "user", "content": text("write it")}),
                json!({"role": "assistant", "content": text("done")}),
            ],
            Some(&defined),
            1,
            3,
        );
        assert_eq!(after_answer.len(), 3);
        let asked = after_answer[2].to_string();
        assert!(
            asked.contains("a README") && asked.contains("has a usage section") && asked.contains("2 of at most 3")
        );
        let after_user = grader_messages(vec![json!({"role": "user", "content": text("hi")})], Some(&defined), 0, 3);
        assert_eq!(after_user.len(), 1);
        assert_eq!(after_user[0]["content"].as_array().map(Vec::len), Some(4));
        // The conversation holds the rubric already (as the agent was told
        // it): it is not sent twice.
        let told = json!({"role": "user", "content": outcome_blocks(&defined)});
        let answered = json!({"role": "assistant", "content": text("done")});
        let asked = serde_json::to_string(&grader_messages(vec![told, answered], Some(&defined), 0, 3)).unwrap();
        assert_eq!(asked.matches("has a usage section").count(), 1, "{asked}");
    }
}
