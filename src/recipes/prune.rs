//! `interlace prune`: apply a plan to a checkpoint.

use std::path::Path;

use anyhow::{bail, Result};

use crate::prune::surgery::prune_checkpoint;
use crate::prune::Plan;

pub fn run(model: &Path, plan: &Path, out: &Path) -> Result<String> {
    let plan_path = plan;
    let plan = Plan::read(plan_path)?;
    if plan.drop.is_empty() {
        bail!(
            "{}: the plan drops no layer, so the pruned checkpoint would be an unchanged copy of {}",
            plan_path.display(),
            model.display()
        );
    }
    let report = prune_checkpoint(model, &plan, out)?;
    Ok(format!(
        "{}: {} -> {} decoder layers ({} tensors written, {} removed); dropped original layers {:?}; plan in {}\n",
        out.display(),
        report.layers_before,
        report.layers_after,
        report.tensors_written,
        report.tensors_removed,
        report.plan.drop,
        out.join(crate::model::dir::PLAN_FILE).display()
    ))
}
