//! Slurm's generic-resource strings: a node's `gres` (`gpu:a100:4(S:0-1)`), its
//! `gres_used` (`gpu:fake:1(IDX:0)`), and a job's `gres_detail` per node. kiln reads
//! the GPUs out of them: how many, of what type, and which indices.

use serde::{Deserialize, Serialize};

use super::hostlist::{expand_numbers, split_top};
use crate::EngineError;

/// One entry of a gres string, such as `gpu:a100:2(IDX:0-1)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gres {
    /// `gpu`, `mps`, `shard`, …
    pub name: String,
    /// The type (`a100`), when the cluster names one.
    pub gpu_type: Option<String>,
    pub count: u64,
    /// The device indices, where Slurm says them (`IDX:`); socket affinity (`S:`)
    /// is not kept.
    pub indices: Vec<u32>,
}

impl Gres {
    pub fn is_gpu(&self) -> bool {
        self.name == "gpu"
    }
}

/// Parses a gres string: entries separated by commas, each `name[:type][:count]`
/// with an optional `(S:…)`, `(IDX:…)` or `(a/b)` suffix. `(null)`, `N/A` and the
/// empty string are no entries.
pub fn parse_gres(s: &str) -> Result<Vec<Gres>, EngineError> {
    let s = s.trim();
    if s.is_empty() || s == "(null)" || s == "N/A" {
        return Ok(Vec::new());
    }
    split_top(s, '(', ')')
        .into_iter()
        .map(|item| {
            parse_one(item).map_err(|why| EngineError::SlurmSyntax {
                what: "gres",
                value: s.to_string(),
                why,
            })
        })
        .collect()
}

fn parse_one(item: &str) -> Result<Gres, String> {
    let item = item.trim();
    // `gres/gpu:a100:2` in TRES strings; plain `gpu:a100:2` elsewhere.
    let item = item.strip_prefix("gres/").unwrap_or(item);
    let (head, suffix) = match item.split_once('(') {
        None => (item, None),
        Some((head, rest)) => {
            let inner = rest
                .strip_suffix(')')
                .ok_or_else(|| format!("{item} has an unclosed '('"))?;
            (head, Some(inner))
        }
    };
    let mut fields: Vec<&str> = head.split(':').collect();
    let name = fields.remove(0).to_string();
    if name.is_empty() {
        return Err(format!("{item} has no name"));
    }
    // The last field is the count when it is a number; a missing count means 1.
    let count = match fields.last() {
        Some(last) if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) => {
            let n = last
                .parse()
                .map_err(|_| format!("{last} is too large a count"))?;
            fields.pop();
            n
        }
        _ => 1,
    };
    let gpu_type = match fields.as_slice() {
        [] => None,
        [ty] if !ty.is_empty() => Some((*ty).to_string()),
        _ => return Err(format!("{item} is not name[:type][:count]")),
    };
    let mut indices = Vec::new();
    if let Some(inner) = suffix {
        if let Some(idx) = inner.strip_prefix("IDX:") {
            indices = expand_numbers(idx)?;
        }
    }
    Ok(Gres {
        name,
        gpu_type,
        count,
        indices,
    })
}

/// The GPUs of a gres string: their total, and the indices Slurm listed.
pub fn gpus_of(gres: &[Gres]) -> (u64, Vec<u32>) {
    gres.iter()
        .filter(|g| g.is_gpu())
        .fold((0, Vec::new()), |(n, mut idx), g| {
            idx.extend(&g.indices);
            (n + g.count, idx)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(name: &str, ty: Option<&str>, count: u64, indices: &[u32]) -> Gres {
        Gres {
            name: name.into(),
            gpu_type: ty.map(Into::into),
            count,
            indices: indices.to_vec(),
        }
    }

    #[test]
    fn reads_the_shapes_slurm_prints() {
        let cases: Vec<(&str, Vec<Gres>)> = vec![
            ("gpu:fake:2", vec![g("gpu", Some("fake"), 2, &[])]),
            ("gpu:a100:4(S:0-1)", vec![g("gpu", Some("a100"), 4, &[])]),
            ("gpu:fake:1(IDX:0)", vec![g("gpu", Some("fake"), 1, &[0])]),
            ("gpu:fake:0(IDX:N/A)", vec![g("gpu", Some("fake"), 0, &[])]),
            ("gpu:2(IDX:0,2)", vec![g("gpu", None, 2, &[0, 2])]),
            ("gpu", vec![g("gpu", None, 1, &[])]),
            ("gres/gpu:h100:8", vec![g("gpu", Some("h100"), 8, &[])]),
            (
                "gpu:a100:2(IDX:0-1),mps:100(0/100)",
                vec![g("gpu", Some("a100"), 2, &[0, 1]), g("mps", None, 100, &[])],
            ),
            (
                "gpu:a100:4(S:0),gpu:v100:2(S:1)",
                vec![
                    g("gpu", Some("a100"), 4, &[]),
                    g("gpu", Some("v100"), 2, &[]),
                ],
            ),
            ("(null)", vec![]),
            ("N/A", vec![]),
            ("", vec![]),
        ];
        for (s, want) in cases {
            assert_eq!(parse_gres(s).unwrap(), want, "{s}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in ["gpu:a:b:2", ":2", "gpu:1(IDX:0", "gpu:1(IDX:x)"] {
            let err = parse_gres(bad).unwrap_err().to_string();
            assert!(err.contains("gres"), "{bad}: {err}");
        }
    }

    #[test]
    fn counts_gpus_only() {
        let gres = parse_gres("gpu:a100:1(IDX:3),mps:100(0/100),gpu:v100:1(IDX:5)").unwrap();
        assert_eq!(gpus_of(&gres), (2, vec![3, 5]));
    }
}
