//! The driver against real learner processes (Python, with the working
//! tree's `agent_mesh_learner`): a good learner trains and evaluates through
//! `LearnerModel`; every way a learner can misbehave becomes a typed error
//! that names what went wrong, the process is restarted only when it is
//! unusable, and restarts stop after `max_restarts` in a row.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::scripted;
use mesh_federated::data::Dataset;
use mesh_federated::model::{Model, ParameterInfo, TrainOptions};
use mesh_learner::{LearnerError, LearnerModel, SupervisedLearner};

fn layout() -> Vec<ParameterInfo> {
    vec![
        ParameterInfo {
            name: "fc.weight".into(),
            shape: vec![3, 2],
        },
        ParameterInfo {
            name: "fc.bias".into(),
            shape: vec![2],
        },
    ]
}

fn options() -> TrainOptions {
    TrainOptions {
        epochs: 1,
        batch_size: 8,
        learning_rate: 0.1,
        proximal_mu: 0.0,
        seed: 3,
    }
}

fn no_data() -> Dataset {
    Dataset::no_rows()
}

/// One fit through a fresh supervised learner in `mode`: the error, the learner.
fn fit_fails(mode: &str) -> (LearnerError, SupervisedLearner) {
    let mut learner = SupervisedLearner::new(scripted(mode));
    let err = learner
        .fit(&layout(), &[0.0; 8], serde_json::Map::new())
        .expect_err("the fit must fail");
    (err, learner)
}

#[test]
fn a_good_learner_trains_and_evaluates_through_the_model_trait() {
    let learner = SupervisedLearner::new(scripted("good")).shared();
    let mut model = LearnerModel::new(learner.clone(), layout()).unwrap();
    model.set_parameters(&[0.5; 8]).unwrap();
    let report = model.train(&no_data(), &options()).unwrap();
    assert_eq!(model.parameters(), vec![1.5; 8]);
    assert_eq!((report.samples, report.steps), (10, 4));
    assert!((report.mean_loss - 1.25).abs() < 1e-6);
    let eval = model.evaluate(&no_data()).unwrap();
    assert_eq!(eval.samples, 20);
    assert!((eval.accuracy - 0.8).abs() < 1e-6 && (eval.loss - 0.5).abs() < 1e-6);
    let guard = mesh_learner::supervisor::lock(&learner);
    assert_eq!(guard.learner_name(), Some("scripted-good"));
    let stats = guard.stats().snapshot();
    assert_eq!(
        (stats.starts, stats.restarts, stats.calls, stats.up),
        (1, 0, 2, 1)
    );
}

#[test]
fn the_layout_call_returns_the_learners_parameters_in_order() {
    let mut learner = SupervisedLearner::new(scripted("good"));
    let arrays = learner.layout().unwrap();
    let described = mesh_learner::layout::describe(&arrays);
    assert_eq!(described, layout());
}

#[test]
fn a_wrong_shape_names_the_parameter_and_keeps_the_process() {
    let (err, mut learner) = fit_fails("wrong_shape");
    assert_eq!(
        err.to_string(),
        "learner's fit reply: parameter fc.weight has shape [2, 3], the job's layout wants [3, 2]"
    );
    let pid = learner.pid();
    assert!(pid.is_some(), "a bad reply does not kill the learner");
    learner
        .evaluate(&layout(), &[0.0; 8], serde_json::Map::new())
        .unwrap();
    assert_eq!(learner.pid(), pid);
    let stats = learner.stats().snapshot();
    assert_eq!((stats.restarts, stats.failures_of("layout")), (0, 1));
}

#[test]
fn nan_and_zero_examples_are_refused() {
    let (err, _) = fit_fails("nan");
    assert!(
        err.to_string()
            .contains("parameter fc.bias has a non-finite value (NaN) at flat index 1"),
        "{err}"
    );
    let (err, _) = fit_fails("zero_examples");
    assert!(err.to_string().contains("num_examples 0"), "{err}");
}

#[test]
fn an_exception_in_fit_is_the_learners_error_and_it_keeps_serving() {
    let (err, mut learner) = fit_fails("raise");
    assert_eq!(
        err.to_string(),
        "learner's fit failed: ValueError: the data loader found no files"
    );
    learner
        .evaluate(&layout(), &[0.0; 8], serde_json::Map::new())
        .unwrap();
    assert_eq!(learner.stats().snapshot().restarts, 0);
}

#[test]
fn a_garbage_frame_restarts_the_learner() {
    let (err, mut learner) = fit_fails("garbage");
    assert!(
        matches!(err, LearnerError::Message { call: "fit", .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("not a safetensors document"),
        "{err}"
    );
    assert_eq!(learner.pid(), None, "the learner was killed");
    learner
        .evaluate(&layout(), &[0.0; 8], serde_json::Map::new())
        .unwrap();
    let stats = learner.stats().snapshot();
    assert_eq!(
        (stats.starts, stats.restarts, stats.failures_of("message")),
        (2, 1, 1)
    );
}

#[test]
fn an_oversized_frame_is_refused_before_it_is_read() {
    let mut config = scripted("oversized");
    config.frame_bytes_max = 1 << 20;
    let mut learner = SupervisedLearner::new(config);
    let err = learner
        .fit(&layout(), &[0.0; 8], serde_json::Map::new())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "learner sent a bad frame during fit: frame of 100000000 bytes is over the limit of 1048576 bytes"
    );
    assert_eq!(learner.stats().snapshot().failures_of("frame"), 1);
}

#[test]
fn a_truncated_frame_is_a_frame_error() {
    let (err, _) = fit_fails("truncated");
    assert!(
        err.to_string()
            .contains("stream ended inside a frame: 10 of 1000 bytes read"),
        "{err}"
    );
}

#[test]
fn a_learner_that_exits_at_once_is_given_up_after_max_restarts() {
    let mut config = scripted("exit_at_once");
    config.max_restarts = 2;
    let mut learner = SupervisedLearner::new(config);
    let first = learner.layout().unwrap_err();
    assert!(
        matches!(first, LearnerError::Exited { call: "start", .. }),
        "{first}"
    );
    assert!(
        first.to_string().contains("exit status: 3")
            && first.to_string().contains("cannot find the training data"),
        "{first}"
    );
    for _ in 0..2 {
        assert!(matches!(learner.layout(), Err(LearnerError::Exited { .. })));
    }
    let last = learner.layout().unwrap_err();
    assert!(
        matches!(last, LearnerError::GaveUp { restarts: 2, .. }),
        "{last}"
    );
    let stats = learner.stats().snapshot();
    assert_eq!(
        (stats.starts, stats.failures_of("exited"), stats.gave_up),
        (0, 3, 1)
    );
}

#[test]
fn a_hung_learner_times_out_and_is_replaced() {
    let mut config = scripted("hang");
    config.fit_timeout_ms = 300;
    let mut learner = SupervisedLearner::new(config);
    let err = learner
        .fit(&layout(), &[0.0; 8], serde_json::Map::new())
        .unwrap_err();
    assert_eq!(err.to_string(), "learner gave no fit reply within 300 ms");
    assert_eq!(learner.pid(), None);
    learner
        .evaluate(&layout(), &[0.0; 8], serde_json::Map::new())
        .unwrap();
    assert_eq!(learner.stats().snapshot().restarts, 1);
}

#[test]
fn a_crash_mid_fit_is_reported_and_the_restarted_learner_trains() {
    let markers = tempfile::tempdir().unwrap();
    let mut config = scripted("crash_once");
    config
        .env
        .insert("MARKER_DIR".into(), markers.path().to_str().unwrap().into());
    let mut learner = SupervisedLearner::new(config);
    let err = learner
        .fit(&layout(), &[0.0; 8], serde_json::Map::new())
        .unwrap_err();
    assert!(
        matches!(err, LearnerError::Exited { call: "fit", ref status, .. } if status == "exit status: 7"),
        "{err}"
    );
    let outcome = learner
        .fit(&layout(), &[0.0; 8], serde_json::Map::new())
        .unwrap();
    assert_eq!(outcome.parameters, vec![1.0; 8]);
    let stats = learner.stats().snapshot();
    assert_eq!((stats.restarts, stats.failures_of("exited")), (1, 1));
}

#[test]
fn printing_to_stdout_does_not_disturb_the_protocol() {
    let mut learner = SupervisedLearner::new(scripted("print_stdout"));
    let outcome = learner
        .fit(&layout(), &[0.0; 8], serde_json::Map::new())
        .unwrap();
    assert_eq!(outcome.num_examples, 10);
}

#[test]
fn a_command_that_does_not_exist_is_a_spawn_error() {
    let config = mesh_learner::LearnerConfig::for_command(vec!["/nonexistent/learner".into()]);
    let err = SupervisedLearner::new(config).layout().unwrap_err();
    assert!(matches!(err, LearnerError::Spawn { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/learner"), "{err}");
}
