//! Binding a node's own data to a job's schema.
//!
//! A job names a [`DataSchema`]; a node takes part with data whose own schema
//! matches it ([`DataSchema::check_matches`]). Binding then maps the node's
//! class indices to the job's class order (a node may hold only some of the
//! classes, in its own order) and standardizes raw table features with the
//! job's statistics, or with statistics fitted on the node's own training
//! rows when the job gives none.

use super::{normalize, DataError, Dataset};
use mesh_spec::schema::{DataSchema, Normalization, SchemaError, Task};

/// Why data cannot take part in a job.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The data's schema does not match the job's.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The data could not be transformed.
    #[error(transparent)]
    Data(#[from] DataError),
}

/// Statistics to standardize `train` and its companions with, for `job`:
/// the job's own, else fitted on `train`; `None` when the data needs none.
pub fn normalization_for(job: &DataSchema, train: &Dataset) -> Option<Normalization> {
    if !train.needs_standardizing {
        return None;
    }
    Some(
        job.normalization
            .clone()
            .unwrap_or_else(|| normalize::fit(train)),
    )
}

/// `data` as the job sees it: checked against `job`, classes in the job's
/// order, standardized with `norm`.
pub fn bind(
    data: &Dataset,
    job: &DataSchema,
    norm: Option<&Normalization>,
) -> Result<Dataset, BindError> {
    job.check_matches(&data.schema())?;
    let mut bound = match norm {
        Some(n) if data.needs_standardizing => normalize::apply(n, data)?,
        _ => data.clone(),
    };
    if let (
        Task::Classification {
            classes: job_classes,
        },
        Task::Classification { classes: own },
    ) = (&job.task, &data.task)
    {
        let map: Vec<u8> = own
            .iter()
            .map(|c| job_classes.iter().position(|j| j == c).unwrap_or(0) as u8)
            .collect();
        for label in &mut bound.labels {
            *label = map.get(usize::from(*label)).copied().unwrap_or(*label);
        }
        bound.num_classes = job_classes.len();
        bound.task = job.task.clone();
    }
    Ok(bound)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mesh_spec::schema::InputShape;

    fn data(classes: &[&str], labels: &[u8]) -> Dataset {
        Dataset {
            features: labels.iter().map(|&l| f32::from(l) * 10.0).collect(),
            labels: labels.to_vec(),
            feature_count: 1,
            num_classes: classes.len(),
            image_shape: None,
            targets: Vec::new(),
            task: Task::Classification {
                classes: classes.iter().map(|c| c.to_string()).collect(),
            },
            needs_standardizing: true,
            target_std: None,
        }
    }

    fn job(classes: &[&str]) -> DataSchema {
        DataSchema {
            input: InputShape::Table { features: 1 },
            task: Task::Classification {
                classes: classes.iter().map(|c| c.to_string()).collect(),
            },
            normalization: None,
        }
    }

    #[test]
    fn labels_follow_the_jobs_class_order_and_features_are_standardized() {
        let own = data(&["b", "c"], &[0, 1, 1]);
        let schema = job(&["a", "b", "c"]);
        let norm = normalization_for(&schema, &own);
        let bound = bind(&own, &schema, norm.as_ref()).unwrap();
        assert_eq!(bound.labels, [1, 2, 2]);
        assert_eq!(bound.num_classes, 3);
        let mean: f32 = bound.features.iter().sum::<f32>() / 3.0;
        assert!(mean.abs() < 1e-6);
    }

    #[test]
    fn data_of_another_schema_is_refused_with_the_reason() {
        let own = data(&["a", "z"], &[0, 1]);
        let err = bind(&own, &job(&["a", "b"]), None).unwrap_err();
        assert!(err.to_string().starts_with("schema mismatch"), "{err}");
    }
}
