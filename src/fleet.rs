//! `minerva fleet slurm|k8s|github PIPELINE --shards N`: a ready-to-submit spec that runs a
//! pipeline's shards (`run --shard K/N`) on a scheduler people already run, then `minerva
//! merge`s them. minerva writes the spec and never talks to the scheduler itself.

/// What every spec needs.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The pipeline file, as the workers will see it (relative to their working directory).
    pub pipeline: String,
    /// The pipeline's name (its run directories are `<out>/<name>/<run-id>`).
    pub name: String,
    /// N.
    pub shards: u32,
    /// `--set KEY=VALUE` overrides, passed to every shard (they are part of the plan's hash).
    pub set: Vec<String>,
    /// The results directory every shard writes under (shared storage for Slurm and
    /// Kubernetes).
    pub out: String,
    /// The command that runs minerva on the workers.
    pub minerva: String,
}

/// A shell word: bare when safe, else single-quoted (also how manifests record commands).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A YAML scalar: a JSON string, which YAML reads as the same string.
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

impl Fleet {
    /// `PIPELINE --set …` as shell words.
    fn pipeline_args(&self) -> String {
        let mut v = vec![shell_quote(&self.pipeline)];
        for s in &self.set {
            v.push("--set".into());
            v.push(shell_quote(s));
        }
        v.join(" ")
    }
}

/// Slurm options.
#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    pub gpus_per_task: Option<u32>,
    /// `--time` of each shard, e.g. 02:00:00.
    pub time: String,
    pub cpus_per_task: Option<u32>,
}

/// A bash script that submits the array job (one task per shard) and the merge job that waits
/// for it with `--dependency=afterok`. Both batch scripts are inside it, as here-documents.
pub fn slurm(f: &Fleet, o: &SlurmOptions) -> String {
    let mut extra = String::new();
    if let Some(p) = &o.partition {
        extra.push_str(&format!("#SBATCH --partition={p}\n"));
    }
    if let Some(g) = o.gpus_per_task {
        extra.push_str(&format!("#SBATCH --gpus-per-task={g}\n"));
    }
    if let Some(c) = o.cpus_per_task {
        extra.push_str(&format!("#SBATCH --cpus-per-task={c}\n"));
    }
    let template = r#"#!/usr/bin/env bash
# Runs pipeline @NAME@ as @N@ shards on Slurm, then merges them. Written by `minerva fleet slurm`.
#
#   bash THIS_FILE            # submits both jobs and prints their ids
#
# What to check before submitting:
# - Every node runs this from the same directory (the project checkout), where
#   @PIPELINE_Q@ and @MINERVA@ resolve, and @OUT_Q@ is on storage all nodes share.
# - The shards must run the same pipeline with the same --set values: the merge refuses shards
#   cut from another plan.
# - Models are downloaded by each shard into its models directory (MINERVA_MODELS, default
#   models/); point it at shared storage to download once.
set -euo pipefail
mkdir -p @OUT_Q@/slurm-logs

# The array: task K runs shard K of @N@. Each shard measures its own jobs, one at a time on
# its node (minerva's bench lock), and writes @OUT_Q@/shards/@NAME@/shard-K.
array=$(sbatch --parsable <<'SBATCH'
#!/usr/bin/env bash
#SBATCH --job-name=minerva-@NAME@
#SBATCH --array=1-@N@
#SBATCH --time=@TIME@
#SBATCH --output=@OUT@/slurm-logs/shard-%a.log
@EXTRA@set -euo pipefail
@MINERVA@ run @PIPELINE_ARGS@ --shard "${SLURM_ARRAY_TASK_ID}/@N@" \
  --out @OUT_Q@/shards --run-id "shard-${SLURM_ARRAY_TASK_ID}" \
  --label "host=$(hostname)" --label "slurm_job=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
SBATCH
)

# The merge: starts once every task of the array succeeded (afterok), and writes
# @OUT_Q@/merged/@NAME@-<merge job id>/report.md from the union of the shards' samples.
merge=$(sbatch --parsable --dependency="afterok:${array}" <<'SBATCH'
#!/usr/bin/env bash
#SBATCH --job-name=minerva-@NAME@-merge
#SBATCH --time=00:30:00
#SBATCH --output=@OUT@/slurm-logs/merge.log
@PARTITION@set -euo pipefail
@MINERVA@ merge @OUT_Q@/shards/@NAME@/shard-* --out @OUT_Q@/merged/@NAME@-"${SLURM_JOB_ID}"
SBATCH
)
echo "array job ${array} (@N@ shards), merge job ${merge}"
echo "report, once done: @OUT@/merged/@NAME@-${merge}/report.md"
"#;
    template
        .replace("@NAME@", &f.name)
        .replace("@N@", &f.shards.to_string())
        .replace("@PIPELINE_Q@", &shell_quote(&f.pipeline))
        .replace("@PIPELINE_ARGS@", &f.pipeline_args())
        .replace("@MINERVA@", &f.minerva)
        .replace("@OUT_Q@", &shell_quote(&f.out))
        .replace("@OUT@", &f.out)
        .replace("@TIME@", &o.time)
        .replace("@EXTRA@", &extra)
        .replace(
            "@PARTITION@",
            &o.partition
                .as_ref()
                .map(|p| format!("#SBATCH --partition={p}\n"))
                .unwrap_or_default(),
        )
}

/// Kubernetes options.
#[derive(Debug, Clone, Default)]
pub struct K8sOptions {
    pub image: String,
    /// A PersistentVolumeClaim every pod mounts at /results (ReadWriteMany).
    pub claim: String,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub gpus: Option<u32>,
    pub node_selector: Vec<(String, String)>,
}

/// A `v1/List` of an Indexed Job (one completion per shard) and a merge Job that waits on the
/// shared volume for every shard, then merges.
pub fn k8s(f: &Fleet, o: &K8sOptions) -> String {
    let name = format!("minerva-{}", f.name.to_lowercase().replace(['_', '.'], "-"));
    let mut resources = String::new();
    let mut limits = Vec::new();
    if let Some(c) = &o.cpu {
        limits.push(format!("cpu: {}", yaml_str(c)));
    }
    if let Some(m) = &o.memory {
        limits.push(format!("memory: {}", yaml_str(m)));
    }
    if let Some(g) = o.gpus {
        limits.push(format!("nvidia.com/gpu: {g}"));
    }
    if !limits.is_empty() {
        resources.push_str("              resources:\n                limits:\n");
        for l in &limits {
            resources.push_str(&format!("                  {l}\n"));
        }
    }
    let mut selector = String::new();
    if !o.node_selector.is_empty() {
        selector.push_str("          nodeSelector:\n");
        for (k, v) in &o.node_selector {
            selector.push_str(&format!("            {}: {}\n", yaml_str(k), yaml_str(v)));
        }
    }
    let run = format!(
        "{} run {} --shard \"$((JOB_COMPLETION_INDEX + 1))/{}\" --out /results/shards --run-id \"shard-$((JOB_COMPLETION_INDEX + 1))\" --label \"host=$NODE_NAME\" --label \"pod=$HOSTNAME\"",
        f.minerva,
        f.pipeline_args(),
        f.shards
    );
    let merge = format!(
        "until [ \"$(ls -d /results/shards/{name}/shard-*/report.md 2>/dev/null | wc -l)\" -ge {n} ]; do echo waiting for the shards; sleep 30; done; {m} merge /results/shards/{name}/shard-* --out \"/results/merged/{name}-$(date -u +%Y%m%dT%H%M%SZ)\"",
        name = f.name,
        n = f.shards,
        m = f.minerva
    );
    let template = r#"# Runs pipeline @NAME@ as @N@ shards on Kubernetes, then merges them. Written by
# `minerva fleet k8s`.
#
#   kubectl apply -f THIS_FILE
#
# What to check before applying:
# - The image holds minerva and the project (the pipeline @PIPELINE@ resolves from
#   workingDir /work), built with the engines the pipeline uses.
# - PersistentVolumeClaim @CLAIM@ exists and is ReadWriteMany: every shard writes its run
#   directory under /results/shards, and the merge reads them all.
# - The merge Job waits until every shard's report.md is on the volume, so a shard that fails
#   leaves it waiting: delete it, rerun the shard, apply again. (Kubernetes has no dependency
#   between Jobs; waiting on the volume needs no extra permissions.)
apiVersion: v1
kind: List
items:
  # One pod per shard: completion index I (from 0) runs shard I+1 of @N@.
  - apiVersion: batch/v1
    kind: Job
    metadata:
      name: @JOB@
      labels: { app.kubernetes.io/name: minerva, minerva/pipeline: @JOB@ }
    spec:
      completionMode: Indexed
      completions: @N@
      parallelism: @N@
      backoffLimit: 0
      template:
        spec:
          restartPolicy: Never
@SELECTOR@          containers:
            - name: shard
              image: @IMAGE@
              workingDir: /work
              command: ["/bin/sh", "-c"]
              args: [@RUN@]
              env:
                - name: NODE_NAME
                  valueFrom: { fieldRef: { fieldPath: spec.nodeName } }
@RESOURCES@              volumeMounts:
                - { name: results, mountPath: /results }
          volumes:
            - name: results
              persistentVolumeClaim: { claimName: @CLAIM_Y@ }
  # The merge: waits for every shard's report on the volume, then writes
  # /results/merged/@NAME@-<time>/report.md from the union of their samples.
  - apiVersion: batch/v1
    kind: Job
    metadata:
      name: @JOB@-merge
      labels: { app.kubernetes.io/name: minerva, minerva/pipeline: @JOB@ }
    spec:
      backoffLimit: 0
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: merge
              image: @IMAGE@
              workingDir: /work
              command: ["/bin/sh", "-c"]
              args: [@MERGE@]
              volumeMounts:
                - { name: results, mountPath: /results }
          volumes:
            - name: results
              persistentVolumeClaim: { claimName: @CLAIM_Y@ }
"#;
    template
        .replace("@NAME@", &f.name)
        .replace("@JOB@", &name)
        .replace("@N@", &f.shards.to_string())
        .replace("@PIPELINE@", &f.pipeline)
        .replace("@CLAIM@", &o.claim)
        .replace("@CLAIM_Y@", &yaml_str(&o.claim))
        .replace("@IMAGE@", &yaml_str(&o.image))
        .replace("@RUN@", &yaml_str(&run))
        .replace("@MERGE@", &yaml_str(&merge))
        .replace("@SELECTOR@", &selector)
        .replace("@RESOURCES@", &resources)
}

/// GitHub Actions options.
#[derive(Debug, Clone, Default)]
pub struct GithubOptions {
    pub runs_on: String,
    /// An artifact holding a baseline run directory (from an earlier workflow run, whose id
    /// the workflow takes as an input): the merge job adds `minerva compare` against it.
    pub baseline_artifact: Option<String>,
}

/// A workflow: a matrix job with one entry per shard, each uploading its run directory as an
/// artifact, and a merge job that downloads them all, merges, and writes the report (and a
/// comparison with the baseline) to the job summary.
pub fn github(f: &Fleet, o: &GithubOptions) -> String {
    let list: Vec<String> = (1..=f.shards).map(|k| k.to_string()).collect();
    let inputs = if o.baseline_artifact.is_some() {
        r#"
    inputs:
      baseline_run_id:
        description: The id of the workflow run whose artifact holds the baseline run
        required: true"#
    } else {
        " {}"
    };
    let baseline = match &o.baseline_artifact {
        Some(a) => r###"      # The baseline: a run directory uploaded as artifact @ARTIFACT@ by an earlier run.
      - uses: actions/download-artifact@v4
        with:
          name: @ARTIFACT_Y@
          path: baseline
          run-id: ${{ inputs.baseline_run_id }}
          github-token: ${{ github.token }}
      - name: Compare with the baseline
        run: |
          { echo; echo "## Against the baseline"; echo; } >> "$GITHUB_STEP_SUMMARY"
          @MINERVA@ compare baseline merged >> "$GITHUB_STEP_SUMMARY"
"###
        .replace("@ARTIFACT@", a)
        .replace("@ARTIFACT_Y@", &yaml_str(a)),
        None => String::new(),
    };
    let template = r#"# Runs pipeline @NAME@ as @N@ shards on GitHub Actions, then merges them. Written by
# `minerva fleet github`; save it as .github/workflows/minerva-@NAME@.yml.
#
# What to check:
# - runs-on: a hosted runner shares its cores with nothing you control; self-hosted runners
#   (labels) give steadier figures. Each shard records its runner with --label.
# - The install step builds minerva from this repository; replace it with your own if you ship
#   a binary.
name: minerva @NAME@
on:
  workflow_dispatch:@INPUTS@
jobs:
  shard:
    runs-on: @RUNS_ON@
    strategy:
      fail-fast: false
      matrix:
        shard: [@LIST@]
    steps:
      - uses: actions/checkout@v4
      - name: Install minerva
        run: cargo install --path . --locked
      - name: Run shard ${{ matrix.shard }} of @N@
        run: >-
          @MINERVA@ run @PIPELINE_ARGS@ --shard ${{ matrix.shard }}/@N@
          --out out --run-id shard-${{ matrix.shard }}
          --label runner=${{ runner.name }} --label os=${{ runner.os }}
      - uses: actions/upload-artifact@v4
        with:
          name: minerva-@NAME@-shard-${{ matrix.shard }}
          path: out/@NAME@/shard-${{ matrix.shard }}
  merge:
    needs: shard
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: Install minerva
        run: cargo install --path . --locked
      - uses: actions/download-artifact@v4
        with:
          pattern: minerva-@NAME@-shard-*
          path: shards
      - name: Merge
        run: |
          @MINERVA@ merge shards/* --out merged
          cat merged/report.md >> "$GITHUB_STEP_SUMMARY"
@BASELINE@      - uses: actions/upload-artifact@v4
        with:
          name: minerva-@NAME@-merged
          path: merged
"#;
    template
        .replace("@BASELINE@", &baseline)
        .replace("@INPUTS@", inputs)
        .replace("@NAME@", &f.name)
        .replace("@N@", &f.shards.to_string())
        .replace("@LIST@", &list.join(", "))
        .replace("@RUNS_ON@", &yaml_str(&o.runs_on))
        .replace("@PIPELINE_ARGS@", &f.pipeline_args())
        .replace("@MINERVA@", &f.minerva)
}
