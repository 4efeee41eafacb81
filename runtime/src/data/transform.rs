//! Record transforms from the graph, applied in order after loading.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use post_graph::{Condition, Transform};

use super::{DataError, PredicateFn, Record};

pub fn apply_transforms(
    dataset: &str,
    mut records: Vec<Record>,
    transforms: &[Transform],
    seed: u64,
    predicate: &PredicateFn<'_>,
) -> Result<Vec<Record>, DataError> {
    let err = |message: String| DataError::Dataset {
        dataset: dataset.to_string(),
        message,
    };
    for (i, t) in transforms.iter().enumerate() {
        // Each shuffling transform gets its own stream so two shuffles do not cancel out.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (0x5eed_0000 + i as u64));
        match t {
            Transform::Template { template, into } => {
                for (n, r) in records.iter_mut().enumerate() {
                    let text = render_template(template, r)
                        .map_err(|m| err(format!("record {}: template: {m}", n + 1)))?;
                    r.insert(into, text);
                }
            }
            Transform::DropPrompt => {
                for r in &mut records {
                    r.insert("prompt", String::new());
                }
            }
            Transform::AppendIndicator { token, when } => match when {
                Condition::Expr { expr } => {
                    for (n, r) in records.iter_mut().enumerate() {
                        let v = predicate(expr, r).map_err(|m| {
                            err(format!("record {}: indicator condition: {m}", n + 1))
                        })?;
                        if v > 0.0 {
                            let prompt = r.get("prompt").unwrap_or("").to_string();
                            r.insert("prompt", prompt + token);
                        }
                    }
                }
                Condition::AttendsToContext { model, .. } => {
                    return Err(err(format!(
                        "the attention probe condition (attends_to_context of model `{model}`) is not supported by this runtime yet"
                    )));
                }
            },
            Transform::Shard { index, count } => {
                if *count == 0 || index >= count {
                    return Err(err(format!("shard {index} of {count} does not exist")));
                }
                records = records
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| i % count == *index)
                    .map(|(_, r)| r)
                    .collect();
            }
            Transform::Filter { when } => {
                let mut kept = Vec::with_capacity(records.len());
                for (n, r) in records.into_iter().enumerate() {
                    let v = predicate(when, &r)
                        .map_err(|m| err(format!("record {}: filter: {m}", n + 1)))?;
                    if v > 0.0 {
                        kept.push(r);
                    }
                }
                records = kept;
            }
            Transform::Take { n } => {
                records.shuffle(&mut rng);
                records.truncate(*n);
            }
            Transform::Shuffle => records.shuffle(&mut rng),
        }
    }
    Ok(records)
}

/// Replace `{field}` holes with the record's fields; `{{` and `}}` are literal braces.
pub fn render_template(template: &str, record: &Record) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(ch) => name.push(ch),
                        None => return Err(format!("unclosed `{{{name}` in `{template}`")),
                    }
                }
                let value = record.get(name.trim()).ok_or_else(|| {
                    let names: Vec<&str> = record.fields().keys().map(String::as_str).collect();
                    format!("no field `{name}` (fields: {})", names.join(", "))
                })?;
                out.push_str(value);
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use post_graph::RExpr;

    fn rec(prompt: &str, answer: &str) -> Record {
        let mut r = Record::default();
        r.insert("prompt", prompt.into());
        r.insert("answer", answer.into());
        r
    }

    fn no_predicate(_: &RExpr, _: &Record) -> Result<f64, String> {
        Err("unused".into())
    }

    #[test]
    fn template_shard_take_drop() {
        let records: Vec<Record> = (0..10)
            .map(|i| rec(&format!("q{i}"), &i.to_string()))
            .collect();
        let ts = vec![
            Transform::Template {
                template: "question: {prompt} {{x}}".into(),
                into: "prompt".into(),
            },
            Transform::Shard { index: 1, count: 2 },
            Transform::Take { n: 3 },
        ];
        let out = apply_transforms("d", records.clone(), &ts, 1, &no_predicate).unwrap();
        assert_eq!(out.len(), 3);
        for r in &out {
            let a: usize = r.get("answer").unwrap().parse().unwrap();
            assert_eq!(a % 2, 1);
            assert_eq!(r.get("prompt").unwrap(), format!("question: q{a} {{x}}"));
        }
        let again = apply_transforms("d", records.clone(), &ts, 1, &no_predicate).unwrap();
        assert_eq!(out, again);
        let dropped =
            apply_transforms("d", records, &[Transform::DropPrompt], 1, &no_predicate).unwrap();
        assert!(dropped.iter().all(|r| r.get("prompt") == Some("")));
    }

    #[test]
    fn template_names_missing_field() {
        let e = render_template("{question}", &rec("p", "a")).unwrap_err();
        assert!(e.contains("no field `question`"), "{e}");
    }

    #[test]
    fn filter_and_indicator_use_predicate() {
        let records: Vec<Record> = (0..4).map(|i| rec("p", &i.to_string())).collect();
        let pred = |_: &RExpr, r: &Record| -> Result<f64, String> {
            Ok(f64::from(
                r.get("answer") == Some("2") || r.get("answer") == Some("3"),
            ))
        };
        let e = RExpr::Bool { value: true };
        let out = apply_transforms(
            "d",
            records,
            &[
                Transform::AppendIndicator {
                    token: " [ctx]".into(),
                    when: Condition::Expr { expr: e.clone() },
                },
                Transform::Filter { when: e },
            ],
            0,
            &pred,
        )
        .unwrap();
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|r| r.get("prompt") == Some("p [ctx]")));
    }
}
