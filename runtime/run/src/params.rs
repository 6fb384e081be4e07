//! Resolving a run's parameters: the manifest's defaults, overridden by what
//! the user gave, each checked against its declared type and range before any
//! guest code runs.

use palisade_host_api::manifest::{Manifest, ParamSpec, ParamType};

/// A parameter the user gave that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("unknown parameter {name} (the strategy declares: {declared})")]
    Unknown { name: String, declared: String },
    #[error("parameter {name}: {value:?} is not a valid {ty}")]
    NotA {
        name: String,
        value: String,
        ty: &'static str,
    },
    #[error("parameter {name} = {value} is out of range (declared {range})")]
    OutOfRange {
        name: String,
        value: String,
        range: String,
    },
    #[error("parameter {name} is given twice")]
    Twice { name: String },
    #[error("parameter {0:?} is not of the form name=value")]
    Syntax(String),
}

/// Splits `name=value`.
pub fn parse_assignment(text: &str) -> Result<(String, String), ParamError> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
            Ok((k.trim().to_string(), v.trim().to_string()))
        }
        _ => Err(ParamError::Syntax(text.to_string())),
    }
}

fn type_name(ty: ParamType) -> &'static str {
    match ty {
        ParamType::Int => "int",
        ParamType::Float => "float",
        ParamType::Bool => "bool",
    }
}

/// The declared range of a parameter, for messages: `2..=200`, `>= 0`, `any`.
pub fn range_text(spec: &ParamSpec) -> String {
    match (spec.min, spec.max) {
        (Some(lo), Some(hi)) => format!("{lo}..={hi}"),
        (Some(lo), None) => format!(">= {lo}"),
        (None, Some(hi)) => format!("<= {hi}"),
        (None, None) => "any".into(),
    }
}

/// Checks one numeric value against a parameter's type and range.
pub fn check_value(spec: &ParamSpec, value: f64) -> Result<f64, ParamError> {
    let out_of_range = || ParamError::OutOfRange {
        name: spec.name.clone(),
        value: format!("{value}"),
        range: range_text(spec),
    };
    if !value.is_finite() {
        return Err(ParamError::NotA {
            name: spec.name.clone(),
            value: format!("{value}"),
            ty: type_name(spec.ty),
        });
    }
    match spec.ty {
        ParamType::Bool if value != 0.0 && value != 1.0 => Err(ParamError::NotA {
            name: spec.name.clone(),
            value: format!("{value}"),
            ty: "bool",
        }),
        ParamType::Int if value.fract() != 0.0 => Err(ParamError::NotA {
            name: spec.name.clone(),
            value: format!("{value}"),
            ty: "int",
        }),
        _ if spec.min.is_some_and(|lo| value < lo) || spec.max.is_some_and(|hi| value > hi) => {
            Err(out_of_range())
        }
        _ => Ok(value),
    }
}

/// Parses a user-written value for `spec`.
pub fn parse_value(spec: &ParamSpec, text: &str) -> Result<f64, ParamError> {
    let not_a = || ParamError::NotA {
        name: spec.name.clone(),
        value: text.to_string(),
        ty: type_name(spec.ty),
    };
    let value = match spec.ty {
        ParamType::Bool => match text {
            "true" | "1" => 1.0,
            "false" | "0" => 0.0,
            _ => return Err(not_a()),
        },
        ParamType::Int | ParamType::Float => text.parse::<f64>().map_err(|_| not_a())?,
    };
    check_value(spec, value)
}

/// Finds a declared parameter by name.
pub fn spec<'m>(manifest: &'m Manifest, name: &str) -> Result<&'m ParamSpec, ParamError> {
    manifest
        .params
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ParamError::Unknown {
            name: name.to_string(),
            declared: declared(manifest),
        })
}

fn declared(manifest: &Manifest) -> String {
    if manifest.params.is_empty() {
        return "no parameters".into();
    }
    manifest
        .params
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every declared parameter with its value: the default unless overridden.
/// The order is the manifest's.
pub fn resolve(
    manifest: &Manifest,
    overrides: &[(String, String)],
) -> Result<Vec<(String, f64)>, ParamError> {
    let mut values: Vec<(String, f64)> = manifest
        .params
        .iter()
        .map(|p| (p.name.clone(), p.default.as_f64()))
        .collect();
    for (i, (name, text)) in overrides.iter().enumerate() {
        if overrides[..i].iter().any(|(n, _)| n == name) {
            return Err(ParamError::Twice { name: name.clone() });
        }
        let spec = spec(manifest, name)?;
        let value = parse_value(spec, text)?;
        if let Some(slot) = values.iter_mut().find(|(n, _)| n == name) {
            slot.1 = value;
        }
    }
    Ok(values)
}

/// A parameter's value as results report it: the values of `int` and
/// `bool` parameters are JSON integers, those of `float` parameters JSON
/// numbers. Every document that names parameter values (a run's parameters,
/// grid axes, variants, chosen parameters, stability) writes them as this.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reported {
    pub value: f64,
    /// True for `int` and `bool` parameters.
    pub integer: bool,
}

impl Reported {
    /// `value` of the parameter `name` of `manifest` (an undeclared name is
    /// reported as a float).
    pub fn of(manifest: &Manifest, name: &str, value: f64) -> Reported {
        Reported {
            value,
            integer: is_integer(manifest, name),
        }
    }
}

/// True when `manifest` declares `name` as an `int` or `bool` parameter.
pub fn is_integer(manifest: &Manifest, name: &str) -> bool {
    manifest
        .params
        .iter()
        .any(|p| p.name == name && matches!(p.ty, ParamType::Int | ParamType::Bool))
}

/// Integers beyond this magnitude are written as floats (they are not exact
/// in an f64 anyway).
const LARGEST_INTEGER: f64 = 9.0e15;

impl serde::Serialize for Reported {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let v = self.value;
        if self.integer && v.fract() == 0.0 && v.abs() < LARGEST_INTEGER {
            serializer.serialize_i64(v as i64)
        } else {
            serializer.serialize_f64(v)
        }
    }
}

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.value, f)
    }
}

/// Parameter values in a fixed order, written as one JSON object in that
/// order (values as [`Reported`]) and as `name=value ...` text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamSet(pub Vec<(String, Reported)>);

impl ParamSet {
    /// `values` of `manifest`'s parameters.
    pub fn of(manifest: &Manifest, values: &[(String, f64)]) -> ParamSet {
        ParamSet(
            values
                .iter()
                .map(|(name, v)| (name.clone(), Reported::of(manifest, name, *v)))
                .collect(),
        )
    }

    /// The value of a parameter.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.value)
    }

    /// Every `(name, value)`, in order.
    pub fn values(&self) -> Vec<(String, f64)> {
        self.0.iter().map(|(n, v)| (n.clone(), v.value)).collect()
    }
}

impl serde::Serialize for ParamSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl std::fmt::Display for ParamSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_sets_serialize_in_their_order_with_integers_as_integers() {
        let whole = |v| Reported {
            value: v,
            integer: true,
        };
        let p = ParamSet(vec![
            ("slow".into(), whole(20.0)),
            (
                "k".into(),
                Reported {
                    value: 5.0,
                    integer: false,
                },
            ),
        ]);
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"slow":20,"k":5.0}"#);
        assert_eq!(p.to_string(), "slow=20 k=5");
        assert_eq!(p.get("k"), Some(5.0));
        assert_eq!(p.get("size"), None);
        // Not whole, or too large to be exact: written as a float.
        assert_eq!(serde_json::to_string(&whole(2.5)).unwrap(), "2.5");
        assert_eq!(serde_json::to_string(&whole(1e16)).unwrap(), "1e+16");
        assert_eq!(serde_json::to_string(&whole(-3.0)).unwrap(), "-3");
    }

    fn manifest() -> Manifest {
        serde_json::from_str(
            r#"{"abi":1,"name":"t","version":"1","params":[
                {"name":"fast","type":"int","default":10,"min":2,"max":200},
                {"name":"k","type":"float","default":2.0,"min":0.5},
                {"name":"on","type":"bool","default":true}]}"#,
        )
        .unwrap()
    }

    fn check(overrides: &[&str], expected: Result<Vec<f64>, &str>) {
        let pairs: Vec<(String, String)> = overrides.iter().map(|o| parse_assignment(o).unwrap()).collect();
        let got = resolve(&manifest(), &pairs);
        match expected {
            Ok(values) => {
                let got: Vec<f64> = got
                    .unwrap_or_else(|e| panic!("{overrides:?}: {e}"))
                    .into_iter()
                    .map(|(_, v)| v)
                    .collect();
                assert_eq!(got, values, "{overrides:?}");
            }
            Err(message) => {
                let err = got.expect_err(message).to_string();
                assert_eq!(err, message, "{overrides:?}");
            }
        }
    }

    #[test]
    fn resolves_defaults_and_overrides() {
        check(&[], Ok(vec![10.0, 2.0, 1.0]));
        check(&["fast=20", "on=false"], Ok(vec![20.0, 2.0, 0.0]));
        check(&["k=0.5", "fast=2"], Ok(vec![2.0, 0.5, 1.0]));
        check(&["fast=200"], Ok(vec![200.0, 2.0, 1.0]));
        check(&["k=1e6"], Ok(vec![10.0, 1e6, 1.0]));
    }

    #[test]
    fn rejects_bad_values_naming_them() {
        check(
            &["slow=3"],
            Err("unknown parameter slow (the strategy declares: fast, k, on)"),
        );
        check(
            &["fast=1"],
            Err("parameter fast = 1 is out of range (declared 2..=200)"),
        );
        check(
            &["fast=201"],
            Err("parameter fast = 201 is out of range (declared 2..=200)"),
        );
        check(&["fast=2.5"], Err("parameter fast: \"2.5\" is not a valid int"));
        check(&["fast=ten"], Err("parameter fast: \"ten\" is not a valid int"));
        check(
            &["k=0.4"],
            Err("parameter k = 0.4 is out of range (declared >= 0.5)"),
        );
        check(&["k=NaN"], Err("parameter k: \"NaN\" is not a valid float"));
        check(&["on=yes"], Err("parameter on: \"yes\" is not a valid bool"));
        check(&["fast=3", "fast=4"], Err("parameter fast is given twice"));
    }

    #[test]
    fn assignment_syntax() {
        assert_eq!(parse_assignment("a=1").unwrap(), ("a".into(), "1".into()));
        assert!(parse_assignment("a").is_err());
        assert!(parse_assignment("=1").is_err());
        assert!(parse_assignment("a=").is_err());
    }
}
