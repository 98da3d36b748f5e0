//! Parsing of textual specs `name` or `name:key=value,key=value`, shared by the rule,
//! pre-aggregation, server-optimizer and attack parsers (`krum`, `cclip:tau=5`,
//! `sign-flip:scale=4`).

use std::fmt::Display;
use std::str::FromStr;

/// Why a textual spec could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseSpecError {
    /// The name before `:` is not known.
    #[error("unknown {kind} '{name}'; expected one of: {expected}")]
    UnknownName {
        /// What was being parsed ("aggregation rule", "attack", ...).
        kind: &'static str,
        /// The unknown name.
        name: String,
        /// The accepted names.
        expected: &'static str,
    },
    /// A parameter key is not accepted by this name.
    #[error("{name}: unknown parameter '{key}'; accepted: {expected}")]
    UnknownParameter {
        /// The spec's name.
        name: String,
        /// The unknown key.
        key: String,
        /// The accepted keys.
        expected: &'static str,
    },
    /// A parameter value does not parse or is out of range.
    #[error("{name}: parameter '{key}' has invalid value '{value}': {reason}")]
    InvalidValue {
        /// The spec's name.
        name: String,
        /// The key.
        key: String,
        /// The offending value.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A parameter is not of the form `key=value`.
    #[error("{name}: malformed parameter '{part}', expected key=value")]
    Malformed {
        /// The spec's name.
        name: String,
        /// The malformed part.
        part: String,
    },
}

/// A parsed `name:key=value,...` spec whose parameters are taken one by one.
#[derive(Debug)]
pub(crate) struct Spec<'a> {
    /// The name, trimmed and lower-cased.
    pub(crate) name: String,
    params: Vec<(&'a str, &'a str)>,
}

impl<'a> Spec<'a> {
    /// Splits `text` into a name and its `key=value` parameters.
    pub(crate) fn parse(text: &'a str) -> Result<Self, ParseSpecError> {
        let (name, rest) = text.split_once(':').unwrap_or((text, ""));
        let name = name.trim().to_ascii_lowercase();
        let mut params = Vec::new();
        for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| ParseSpecError::Malformed {
                    name: name.clone(),
                    part: part.to_owned(),
                })?;
            params.push((key.trim(), value.trim()));
        }
        Ok(Self { name, params })
    }

    /// Removes and parses parameter `key`, if present.
    pub(crate) fn take<T>(&mut self, key: &str) -> Result<Option<T>, ParseSpecError>
    where
        T: FromStr,
        T::Err: Display,
    {
        let Some(pos) = self
            .params
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case(key))
        else {
            return Ok(None);
        };
        let (k, value) = self.params.remove(pos);
        value
            .parse()
            .map(Some)
            .map_err(|e: T::Err| ParseSpecError::InvalidValue {
                name: self.name.clone(),
                key: k.to_owned(),
                value: value.to_owned(),
                reason: e.to_string(),
            })
    }

    /// Like [`Spec::take`], then checks `valid(value)`; `reason` says what is valid.
    pub(crate) fn take_checked<T>(
        &mut self,
        key: &str,
        valid: impl Fn(&T) -> bool,
        reason: &str,
    ) -> Result<Option<T>, ParseSpecError>
    where
        T: FromStr + Display,
        T::Err: Display,
    {
        match self.take::<T>(key)? {
            Some(v) if !valid(&v) => Err(ParseSpecError::InvalidValue {
                name: self.name.clone(),
                key: key.to_owned(),
                value: v.to_string(),
                reason: reason.to_owned(),
            }),
            other => Ok(other),
        }
    }

    /// Fails if any parameter was not taken; `expected` lists the accepted keys.
    pub(crate) fn finish(self, expected: &'static str) -> Result<(), ParseSpecError> {
        match self.params.first() {
            None => Ok(()),
            Some((key, _)) => Err(ParseSpecError::UnknownParameter {
                name: self.name,
                key: (*key).to_owned(),
                expected,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_names_and_parameters() {
        let mut spec = Spec::parse(" CClip : tau=2.5, iters=3").unwrap();
        assert_eq!(spec.name, "cclip");
        assert_eq!(spec.take::<f32>("tau").unwrap(), Some(2.5));
        assert_eq!(spec.take::<usize>("iters").unwrap(), Some(3));
        assert_eq!(spec.take::<usize>("missing").unwrap(), None);
        spec.finish("tau, iters").unwrap();
    }

    #[test]
    fn reports_bad_parameters() {
        assert!(matches!(
            Spec::parse("krum:oops"),
            Err(ParseSpecError::Malformed { .. })
        ));
        let mut spec = Spec::parse("cclip:tau=abc").unwrap();
        assert!(matches!(
            spec.take::<f32>("tau"),
            Err(ParseSpecError::InvalidValue { .. })
        ));
        let spec = Spec::parse("cclip:zzz=1").unwrap();
        assert!(matches!(
            spec.finish("tau"),
            Err(ParseSpecError::UnknownParameter { .. })
        ));
        let mut spec = Spec::parse("cclip:tau=-1").unwrap();
        let err = spec
            .take_checked::<f32>("tau", |t| *t > 0.0, "must be > 0")
            .unwrap_err();
        assert!(err.to_string().contains("must be > 0"), "{err}");
    }
}
