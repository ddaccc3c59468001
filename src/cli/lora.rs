//! LoRA on the command line: `--lora PATH[:SCALE]` read and checked against the model,
//! `--lora-merge`, `--lora-seq` (each continuation's adapters), and `tinfer lora merge`.

use anyhow::{Context, Result};

use super::args::usage;
use super::lora_args::{LoraArgs, LoraCommand};
use tinfer::config::Config;
use tinfer::lora::Lora;
use tinfer::weights::{Tensor, Weights};

/// `PATH[:SCALE]` -> (path, factor). A path that exists as given wins over a `:` in it.
fn parse_spec(spec: &str) -> Result<(std::path::PathBuf, f32)> {
    if std::path::Path::new(spec).exists() {
        return Ok((spec.into(), 1.0));
    }
    match spec.rsplit_once(':') {
        Some((path, scale)) => match scale.parse::<f32>() {
            Ok(s) if s.is_finite() => Ok((path.into(), s)),
            _ => usage!("--lora {spec}: the scale after ':' must be a number, got {scale:?}"),
        },
        None => Ok((spec.into(), 1.0)),
    }
}

/// The --lora adapters for a model of `cfg`: merged into `weights` with --lora-merge (none
/// returned), else returned for Model::with_loras. One line per adapter on stderr.
pub fn adapters(args: &LoraArgs, cfg: &Config, weights: &mut Weights<Tensor>) -> Result<Vec<Lora>> {
    if args.lora_merge && args.lora.is_empty() {
        usage!("--lora-merge merges the --lora adapters: give at least one --lora PATH");
    }
    let mut loras = vec![];
    for spec in &args.lora {
        let (path, factor) = parse_spec(spec)?;
        let lora = Lora::load(&path, cfg).with_context(|| format!("--lora {spec}"))?;
        let how = if args.lora_merge { "merged" } else { "unmerged" };
        eprintln!("lora: {} ({}) x {factor}, {how}", lora.name, describe(&lora));
        if args.lora_merge {
            lora.merge_into(weights, factor);
        } else {
            loras.push(Lora {
                default_factor: factor,
                ..lora
            });
        }
    }
    Ok(loras)
}

/// "rank 8, 60 modules (q, v)": what an adapter trains, in words.
fn describe(lora: &Lora) -> String {
    use std::collections::BTreeSet;
    let names = ["q", "k", "v", "o", "gate", "up", "down"];
    let pairs: Vec<(usize, usize)> = (lora.layers.iter())
        .flat_map(|l| {
            l.iter()
                .enumerate()
                .filter_map(|(i, p)| p.as_ref().map(|p| (i, p.rank)))
        })
        .collect();
    let ranks: BTreeSet<String> = pairs.iter().map(|p| p.1.to_string()).collect();
    let kinds: BTreeSet<usize> = pairs.iter().map(|p| p.0).collect();
    let kinds: Vec<&str> = kinds.iter().map(|&i| names[i]).collect();
    let ranks: Vec<String> = ranks.into_iter().collect();
    format!(
        "rank {}, {} modules ({})",
        ranks.join("/"),
        pairs.len(),
        kinds.join(", ")
    )
}

/// --lora-seq's continuations: per entry, a factor per --lora adapter (n of them). Entries are
/// `base`, or adapter numbers from 1 joined by `+`, each with an optional `:SCALE`.
pub fn seq_factors(list: &str, n: usize, merged: bool) -> Result<Vec<Vec<f32>>> {
    if merged {
        usage!("--lora-seq picks adapters per continuation, which needs them unmerged: drop --lora-merge");
    }
    let mut out = vec![];
    for entry in list.split(',').map(str::trim) {
        let mut f = vec![0.0; n];
        if entry != "base" {
            for term in entry.split('+') {
                let (i, s) = term.split_once(':').unwrap_or((term, "1"));
                let (Ok(i), Ok(s)) = (i.trim().parse::<usize>(), s.trim().parse::<f32>()) else {
                    usage!("--lora-seq entry {entry:?}: give `base`, or --lora numbers from 1 joined by + (each with an optional :SCALE), e.g. base,1,1:0.5")
                };
                if i == 0 || i > n {
                    usage!("--lora-seq entry {entry:?}: adapter {i} does not exist ({n} --lora given; they are numbered from 1)");
                }
                f[i - 1] += s;
            }
        }
        out.push(f);
    }
    Ok(out)
}

/// `tinfer lora ...`
pub fn run(cmd: LoraCommand) -> Result<()> {
    match cmd {
        LoraCommand::Merge {
            base,
            adapter,
            out_dir,
            scale,
            dtype,
        } => {
            let n = tinfer::tools::lora_merge::merge(&base, &adapter, &out_dir, scale, dtype)?;
            eprintln!(
                "merged {} into {} matrices of {} (scale {scale}): wrote {}",
                adapter.display(),
                n,
                base.display(),
                out_dir.display()
            );
            Ok(())
        }
    }
}
