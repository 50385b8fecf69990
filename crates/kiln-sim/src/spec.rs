//! GPU model constraints: the trace allows several models per pod
//! (`V100M16|V100M32`), kiln's `gpuType` names one case-insensitive
//! substring of the model name. When the alternatives share a substring that
//! names exactly them among the cluster's models, nothing is lost; otherwise
//! the pod is narrowed to its first model, and counted.

use kiln_sched::model_matches;

/// How a gpu_spec became a kiln `gpu_type`, which names one substring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    Any,
    One(String),
    /// Several models that one substring names exactly ("V100M" for
    /// V100M16|V100M32).
    Shared(String),
    /// Several models with no such substring: the first one.
    Narrowed(String),
}

impl Spec {
    pub fn gpu_type(&self) -> Option<String> {
        match self {
            Spec::Any => None,
            Spec::One(s) | Spec::Shared(s) | Spec::Narrowed(s) => Some(s.clone()),
        }
    }
}

/// `models`: the models the cluster has.
pub fn spec(alternatives: &[String], models: &[String]) -> Spec {
    let mut alts: Vec<&String> = alternatives.iter().collect();
    alts.sort();
    alts.dedup();
    match alts.as_slice() {
        [] => return Spec::Any,
        [one] => return Spec::One((*one).clone()),
        _ => {}
    }
    let wanted: Vec<&String> = models
        .iter()
        .filter(|m| alts.iter().any(|a| a.eq_ignore_ascii_case(m)))
        .collect();
    let first = &alternatives[0];
    let chars: Vec<char> = first.chars().collect();
    for len in (1..=chars.len()).rev() {
        for start in 0..=chars.len() - len {
            let sub: String = chars[start..start + len].iter().collect();
            if !alts.iter().all(|a| model_matches(a, &sub)) {
                continue;
            }
            let named: Vec<&String> = models.iter().filter(|m| model_matches(m, &sub)).collect();
            if named == wanted {
                return Spec::Shared(sub);
            }
        }
    }
    Spec::Narrowed(first.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_keep_a_shared_substring_or_narrow_to_the_first() {
        let models: Vec<String> = ["P100", "T4", "V100M16", "V100M32"]
            .map(String::from)
            .to_vec();
        let s = |x: &str| x.split('|').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(spec(&[], &models), Spec::Any);
        assert_eq!(spec(&s("T4"), &models), Spec::One("T4".into()));
        assert_eq!(
            spec(&s("V100M16|V100M32|V100M32"), &models),
            Spec::Shared("V100M".into())
        );
        assert_eq!(
            spec(&s("P100|V100M16"), &models),
            Spec::Narrowed("P100".into())
        );
        // "100" would also name P100: not exact, so narrowed.
        assert_eq!(
            spec(&s("V100M32|P100"), &models),
            Spec::Narrowed("V100M32".into())
        );
    }
}
