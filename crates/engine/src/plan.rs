//! From a validated pipeline to what the engine runs: admission checks, the
//! sandbox shape and each step's exact command and environment.

use std::time::Duration;

use sandbox::cgroup::Limits;
use sandbox::{CommandSpec, SandboxConfig};
use spec::{Image, Job, Network, Pipeline};

use secrets::SecretStore;

use crate::error::{EngineError, Refusal};

/// The shell every step runs in: `/bin/sh -e -c SCRIPT`, so the step fails
/// at the first command that fails (outside conditionals, as POSIX `-e`
/// says).
pub const SHELL: [&str; 3] = ["/bin/sh", "-e", "-c"];

/// `PATH` inside a job.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything needed to run one job.
#[derive(Debug, Clone)]
pub struct JobPlan {
    /// Job id.
    pub id: String,
    /// Jobs that must succeed first.
    pub needs: Vec<String>,
    /// The sandbox.
    pub sandbox: SandboxConfig,
    /// The steps, in order.
    pub steps: Vec<StepPlan>,
    /// Wall-clock limit of the whole job.
    pub timeout: Duration,
    /// Workspace paths to copy out.
    pub artifacts: Vec<String>,
    /// cgroup limits (defaults filled in).
    pub limits: Limits,
    /// Secrets the job asks for (leased when it starts).
    pub secrets: Vec<spec::SecretRef>,
    /// What the job's egress proxy lets through; `None`: no network but
    /// loopback (no proxy at all).
    pub egress: Option<net::Allowlist>,
}

/// Most processes of a job when the pipeline sets no `pids`.
pub const DEFAULT_PIDS: u64 = 4096;

/// Memory of a job when the pipeline sets none: half of the host's memory,
/// so that one runaway job cannot take the host down with it.
pub fn default_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024 / 2)
}

/// One step, ready to send to the sandbox.
#[derive(Debug, Clone)]
pub struct StepPlan {
    /// Display name.
    pub name: String,
    /// The command.
    pub command: CommandSpec,
    /// Per-step limit.
    pub timeout: Option<Duration>,
}

/// Checks what this version can run, before anything runs. The order of
/// checks is the order of the file, so the first problem reported is the
/// first one a reader meets.
pub fn admit(
    pipeline: &Pipeline,
    jobs: &[usize],
    secrets: Option<&SecretStore>,
) -> Result<(), EngineError> {
    for &i in jobs {
        let Some(job) = pipeline.jobs.get(i) else {
            continue;
        };
        let at =
            |loc: spec::Location| format!("{}:{}:{}", pipeline.file.display(), loc.line, loc.col);
        // Every secret a job asks for must exist and be in scope for
        // PIPELINE/JOB, before anything runs (the store records denials).
        for secret in &job.secrets {
            let denied = match secrets {
                None => format!(
                    "unknown secret {:?}: the secret store is empty (add it with airlock secrets set)",
                    secret.name
                ),
                Some(store) => match store.admit(&secret.name, &pipeline.name, &job.id, 0) {
                    Ok(_) => continue,
                    Err(e) if e.is_denial() => e.to_string(),
                    Err(e) => return Err(EngineError::Secrets(e.to_string())),
                },
            };
            return Err(Refusal::BadInput(format!(
                "{}: job {:?}: {denied}",
                at(secret.location),
                job.id
            ))
            .into());
        }
        if let Image::Oci(image) = &job.image {
            return Err(Refusal::Unavailable(format!(
                "{}: job {:?} asks for image {image:?}; only image: host is supported so far",
                at(job.location),
                job.id
            ))
            .into());
        }
    }
    Ok(())
}

/// Builds the plan of one job (the run id is added to the environment when
/// the job starts).
pub fn plan_job(pipeline: &Pipeline, job: &Job) -> Result<JobPlan, Refusal> {
    let mut base: Vec<(String, String)> = vec![
        ("PATH".into(), PATH.into()),
        ("HOME".into(), "/tmp".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("CI".into(), "true".into()),
    ];
    for (k, v) in pipeline.env.iter().chain(job.env.iter()) {
        set(&mut base, k, v);
    }
    set(&mut base, "AIRLOCK", "true");
    set(&mut base, "AIRLOCK_PIPELINE", &pipeline.name);
    set(&mut base, "AIRLOCK_JOB", &job.id);
    set(&mut base, "AIRLOCK_WORKSPACE", &job.workdir);
    let egress = match &job.network {
        Network::None => None,
        Network::Egress(patterns) => {
            let allow = net::Allowlist::new(patterns).map_err(|e| {
                Refusal::BadInput(format!(
                    "{}: job {:?}: {e}",
                    pipeline.file.display(),
                    job.id
                ))
            })?;
            // The proxy is the job's only way out; tools that honour these
            // variables use it, and anything else finds no route.
            let proxy = format!("http://{}", sandbox::PROXY_ADDR);
            for var in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
                set(&mut base, var, &proxy);
            }
            for var in ["NO_PROXY", "no_proxy"] {
                set(&mut base, var, "localhost,127.0.0.1,::1");
            }
            Some(allow)
        }
    };

    let mut steps = Vec::with_capacity(job.steps.len());
    for (i, step) in job.steps.iter().enumerate() {
        let mut env = base.clone();
        set(&mut env, "AIRLOCK_STEP", &(i + 1).to_string());
        let command = CommandSpec {
            argv: SHELL
                .iter()
                .map(|s| (*s).to_string())
                .chain([step.run.clone()])
                .collect(),
            env,
            cwd: job.workdir.clone(),
        };
        let size = serde_json::to_vec(&command)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > sandbox::MAX_MESSAGE - 1024 {
            return Err(Refusal::BadInput(format!(
                "{}: step {} of job {:?} is too large ({size} bytes with its environment; the limit is {} bytes): move the script into a file under the source tree",
                pipeline.file.display(),
                i + 1,
                job.id,
                sandbox::MAX_MESSAGE - 1024
            )));
        }
        steps.push(StepPlan {
            name: step.name.clone(),
            command,
            timeout: step.timeout,
        });
    }
    Ok(JobPlan {
        id: job.id.clone(),
        needs: job.needs.clone(),
        sandbox: SandboxConfig {
            hostname: format!("airlock-{}", job.id),
            source: job.source.clone(),
            workdir: job.workdir.clone(),
            workspace_size: job.resources.disk,
            tmp_size: job.resources.disk,
            layers: sandbox::Layers::default(),
            egress: matches!(job.network, Network::Egress(_)),
            cgroup: None,
            secrets: Vec::new(),
        },
        steps,
        timeout: job.resources.timeout,
        artifacts: job.artifacts.clone(),
        secrets: job.secrets.clone(),
        egress,
        limits: Limits {
            memory: job.resources.memory.or_else(default_memory),
            cpus: job.resources.cpus,
            pids: Some(job.resources.pids.unwrap_or(DEFAULT_PIDS)),
        },
    })
}

fn set(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_string(),
        None => env.push((key.to_string(), value.to_string())),
    }
}
