//! What the node accepts from a learner: a fit reply with every parameter
//! of the job's layout (right shape, finite values) and a sane example count;
//! an evaluate reply with a finite loss. Anything else is a typed error that
//! names the parameter or the field.

use mesh_federated::model::ParameterInfo;
use serde_json::Value;

use crate::error::LearnerError;
use crate::layout::{self, NamedArray};
use crate::message::{MessageError, Metrics, Reply};

/// Most examples a reply may claim (a trillion): a larger count is a bug,
/// and it would outweigh every other update in the average.
pub const NUM_EXAMPLES_MAX: u64 = 1_000_000_000_000;

/// An accepted fit reply.
#[derive(Clone, Debug, PartialEq)]
pub struct FitOutcome {
    /// The trained parameters, flat, in layout order.
    pub parameters: Vec<f32>,
    /// Samples trained on.
    pub num_examples: u64,
    /// The learner's metrics.
    pub metrics: Metrics,
}

impl FitOutcome {
    /// The `loss` metric, if the learner reported a finite one.
    pub fn loss(&self) -> Option<f64> {
        finite_metric(&self.metrics, "loss")
    }
}

/// An accepted evaluate reply.
#[derive(Clone, Debug, PartialEq)]
pub struct EvaluateOutcome {
    /// Mean loss.
    pub loss: f64,
    /// Samples evaluated.
    pub num_examples: u64,
    /// The learner's metrics.
    pub metrics: Metrics,
}

impl EvaluateOutcome {
    /// The `accuracy` metric, if the learner reported one in `[0, 1]`.
    pub fn accuracy(&self) -> Option<f64> {
        finite_metric(&self.metrics, "accuracy").filter(|a| (0.0..=1.0).contains(a))
    }
}

/// A metric that is a finite number.
pub fn finite_metric(metrics: &Metrics, name: &str) -> Option<f64> {
    metrics
        .get(name)
        .and_then(Value::as_f64)
        .filter(|v| v.is_finite())
}

fn wrong_kind(call: &'static str, reply: Reply) -> LearnerError {
    match reply {
        Reply::Error { message } => LearnerError::Learner { call, message },
        other => LearnerError::Message {
            call,
            cause: MessageError::Unexpected {
                expected: call,
                found: other.kind().to_owned(),
            },
        },
    }
}

/// Checks a fit reply against the job's layout.
pub fn check_fit(layout: &[ParameterInfo], reply: Reply) -> Result<FitOutcome, LearnerError> {
    let call = "fit";
    let Reply::Fit {
        parameters,
        num_examples,
        metrics,
    } = reply
    else {
        return Err(wrong_kind(call, reply));
    };
    if !(1..=NUM_EXAMPLES_MAX).contains(&num_examples) {
        return Err(LearnerError::Reply {
            call,
            reason: format!("num_examples {num_examples} is outside 1..={NUM_EXAMPLES_MAX}"),
        });
    }
    let parameters = layout::gather(layout, &parameters)
        .map_err(|cause| LearnerError::Layout { call, cause })?;
    Ok(FitOutcome {
        parameters,
        num_examples,
        metrics,
    })
}

/// Checks an evaluate reply.
pub fn check_evaluate(reply: Reply) -> Result<EvaluateOutcome, LearnerError> {
    let call = "evaluate";
    let Reply::Evaluate {
        loss,
        num_examples,
        metrics,
    } = reply
    else {
        return Err(wrong_kind(call, reply));
    };
    if !loss.is_finite() {
        return Err(LearnerError::Reply {
            call,
            reason: format!("loss {loss} is not finite"),
        });
    }
    if num_examples > NUM_EXAMPLES_MAX {
        return Err(LearnerError::Reply {
            call,
            reason: format!("num_examples {num_examples} is over {NUM_EXAMPLES_MAX}"),
        });
    }
    Ok(EvaluateOutcome {
        loss,
        num_examples,
        metrics,
    })
}

/// Checks a layout reply: a usable layout with finite values.
pub fn check_layout(reply: Reply) -> Result<Vec<NamedArray>, LearnerError> {
    let call = "layout";
    let Reply::Layout { parameters } = reply else {
        return Err(wrong_kind(call, reply));
    };
    let described = layout::describe(&parameters);
    let invalid = |cause| LearnerError::Layout { call, cause };
    layout::validate(&described).map_err(invalid)?;
    layout::gather(&described, &parameters).map_err(invalid)?;
    Ok(parameters)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn layout() -> Vec<ParameterInfo> {
        vec![ParameterInfo {
            name: "w".into(),
            shape: vec![2],
        }]
    }

    fn fit(values: Vec<f32>, shape: Vec<usize>, num_examples: u64) -> Reply {
        Reply::Fit {
            parameters: vec![NamedArray {
                name: "w".into(),
                shape,
                values,
            }],
            num_examples,
            metrics: Map::new(),
        }
    }

    #[test]
    fn a_good_fit_reply_is_accepted() {
        let outcome = check_fit(&layout(), fit(vec![1.0, 2.0], vec![2], 10)).unwrap();
        assert_eq!(outcome.parameters, vec![1.0, 2.0]);
    }

    #[test]
    fn wrong_shape_nan_and_zero_examples_are_refused_with_the_name() {
        let err = check_fit(&layout(), fit(vec![1.0, 2.0], vec![1, 2], 10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "learner's fit reply: parameter w has shape [1, 2], the job's layout wants [2]"
        );
        let err = check_fit(&layout(), fit(vec![1.0, f32::NAN], vec![2], 10)).unwrap_err();
        assert!(
            err.to_string()
                .contains("parameter w has a non-finite value"),
            "{err}"
        );
        let err = check_fit(&layout(), fit(vec![1.0, 2.0], vec![2], 0)).unwrap_err();
        assert!(err.to_string().contains("num_examples 0"), "{err}");
        assert!(!err.needs_restart());
    }

    #[test]
    fn an_error_reply_and_a_wrong_kind_are_told_apart() {
        let err = check_fit(
            &layout(),
            Reply::Error {
                message: "CUDA out of memory".into(),
            },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "learner's fit failed: CUDA out of memory");
        let err = check_evaluate(fit(vec![], vec![], 1)).unwrap_err();
        assert!(
            err.needs_restart(),
            "a reply to another request: out of step"
        );
    }

    #[test]
    fn an_evaluate_reply_needs_a_finite_loss() {
        let reply = |loss| Reply::Evaluate {
            loss,
            num_examples: 5,
            metrics: Map::new(),
        };
        assert!(check_evaluate(reply(f64::NAN)).is_err());
        let mut metrics = Map::new();
        metrics.insert("accuracy".into(), 1.5.into());
        let outcome = check_evaluate(Reply::Evaluate {
            loss: 0.3,
            num_examples: 5,
            metrics,
        })
        .unwrap();
        assert_eq!(outcome.accuracy(), None, "an accuracy over 1 is not one");
    }
}
