//! From the node tree to a [`Pipeline`]: every key checked by hand, every
//! error at the offending key or value.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::egress;
use crate::error::{quote, SpecError};
use crate::graph;
use crate::model::{
    Image, Job, Location, Network, Pipeline, Resources, SecretRef, Step, DEFAULT_WORKDIR,
};
use crate::names::{self, ENV_RULE, ID_RULE, RESERVED_ENV_PREFIX, SECRET_RULE};
use crate::paths;
use crate::units;
use yamltree::{Entry, Kind, Node};

const TOP_KEYS: &[&str] = &["version", "name", "env", "jobs"];
const JOB_KEYS: &[&str] = &[
    "needs",
    "image",
    "source",
    "workdir",
    "env",
    "secrets",
    "network",
    "resources",
    "steps",
    "artifacts",
];
const RESOURCE_KEYS: &[&str] = &["cpus", "memory", "pids", "disk", "timeout"];
const STEP_KEYS: &[&str] = &["name", "run", "timeout"];
const SECRET_KEYS: &[&str] = &["name", "env"];
const NETWORK_KEYS: &[&str] = &["egress"];

/// Most CPUs a job may ask for.
const MAX_CPUS: f64 = 1024.0;
/// Most processes a job may ask for (the kernel's largest `pid_max`).
const MAX_PIDS: u64 = 4_194_304;
/// Longest default step name, in characters, "…" included.
const STEP_NAME_CHARS: usize = 60;

/// Validates the tree of `file` into a pipeline.
pub(crate) fn pipeline(root: Option<&Node>, file: &Path) -> Result<Pipeline, SpecError> {
    let base = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let default_source = directory(&base, &base.to_string_lossy());
    Check {
        file,
        base,
        default_source,
    }
    .pipeline(root)
}

struct Check<'a> {
    file: &'a Path,
    /// The pipeline file's directory: `source` is relative to it.
    base: PathBuf,
    /// `base`, canonical, or why it cannot be a source directory.
    default_source: Result<PathBuf, String>,
}

/// The entry for `key`, if the mapping has it.
fn get<'n>(entries: &'n [Entry], key: &str) -> Option<&'n Entry> {
    entries.iter().find(|e| e.key == key)
}

/// `"key" in job "build"` and the like, for messages.
fn what(key: &str, ctx: &str) -> String {
    format!("{} {ctx}", quote(key))
}

impl Check<'_> {
    fn err(&self, loc: Location, message: impl Into<String>) -> SpecError {
        SpecError::at(self.file, loc, message)
    }

    /// "expected X for Y, found Z" at the value.
    fn wrong_type(&self, node: &Node, expected: &str, what: &str) -> SpecError {
        self.err(
            node.loc,
            format!("expected {expected} for {what}, found {}", node.describe()),
        )
    }

    fn map<'n>(
        &self,
        node: &'n Node,
        expected: &str,
        what: &str,
    ) -> Result<&'n [Entry], SpecError> {
        node.as_map()
            .ok_or_else(|| self.wrong_type(node, expected, what))
    }

    fn list<'n>(
        &self,
        node: &'n Node,
        expected: &str,
        what: &str,
    ) -> Result<&'n [Node], SpecError> {
        node.as_seq()
            .ok_or_else(|| self.wrong_type(node, expected, what))
    }

    fn text<'n>(&self, node: &'n Node, expected: &str, what: &str) -> Result<&'n str, SpecError> {
        node.as_text()
            .ok_or_else(|| self.wrong_type(node, expected, what))
    }

    /// Unknown keys are errors that list the expected ones.
    fn known_keys(&self, entries: &[Entry], allowed: &[&str], ctx: &str) -> Result<(), SpecError> {
        match entries.iter().find(|e| !allowed.contains(&e.key.as_str())) {
            None => Ok(()),
            Some(e) => Err(self.err(
                e.key_loc,
                format!(
                    "unknown key {} {ctx} (expected one of: {})",
                    quote(&e.key),
                    allowed.join(", ")
                ),
            )),
        }
    }

    /// A key the mapping must have; the error points at the mapping.
    fn required<'n>(
        &self,
        mapping: &Node,
        entries: &'n [Entry],
        key: &str,
        ctx: &str,
        hint: &str,
    ) -> Result<&'n Entry, SpecError> {
        get(entries, key).ok_or_else(|| {
            self.err(
                mapping.loc,
                format!("missing required key {} {ctx} ({hint})", quote(key)),
            )
        })
    }

    fn pipeline(&self, root: Option<&Node>) -> Result<Pipeline, SpecError> {
        let ctx = "at top level";
        let Some(root) = root else {
            return Err(self.err(
                Location { line: 1, col: 1 },
                "empty pipeline file (expected a mapping with version and jobs)",
            ));
        };
        let top = self.map(root, "a mapping with version and jobs", "the pipeline")?;
        self.known_keys(top, TOP_KEYS, ctx)?;

        let version = self.required(root, top, "version", ctx, "expected version: 1")?;
        let v = &version.value;
        let is_one = v.kind() == Some(Kind::Int)
            && v.as_text().and_then(|t| t.parse::<i64>().ok()) == Some(1);
        if !is_one {
            return Err(self.err(
                v.loc,
                format!("unsupported version: expected 1, found {}", v.describe()),
            ));
        }

        let name_entry = get(top, "name");
        let name_at = name_entry.map(|e| e.value.loc);
        let name = match name_entry {
            Some(e) => {
                let name = self.text(&e.value, "a pipeline name", &what("name", ctx))?;
                if !names::is_id(name) {
                    return Err(self.err(
                        e.value.loc,
                        format!("invalid pipeline name {} (expected {ID_RULE})", quote(name)),
                    ));
                }
                name.to_owned()
            }
            None => names::name_from_stem(
                &self
                    .file
                    .file_stem()
                    .map(|s| s.to_string_lossy())
                    .unwrap_or_default(),
            ),
        };

        let env = match get(top, "env") {
            Some(e) => self.env(&e.value, "the pipeline")?,
            None => BTreeMap::new(),
        };

        let jobs_entry = self.required(
            root,
            top,
            "jobs",
            ctx,
            "expected a mapping of job ids to jobs",
        )?;
        let jobs_node = &jobs_entry.value;
        let job_entries = self.map(
            jobs_node,
            "a mapping of job ids to jobs",
            &what("jobs", ctx),
        )?;
        if job_entries.is_empty() {
            return Err(self.err(jobs_node.loc, "expected at least one job in \"jobs\""));
        }

        let known: Vec<&str> = job_entries.iter().map(|e| e.key.as_str()).collect();
        let index: HashMap<&str, usize> =
            known.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut jobs = Vec::with_capacity(job_entries.len());
        let mut needs_at = Vec::with_capacity(job_entries.len());
        for entry in job_entries {
            let (job, at) = self.job(entry, &known, &index, &env)?;
            jobs.push(job);
            needs_at.push(at);
        }

        let edges: Vec<Vec<(usize, Location)>> = jobs
            .iter()
            .zip(&needs_at)
            .map(|(job, locs)| {
                job.needs
                    .iter()
                    .zip(locs)
                    .filter_map(|(id, loc)| index.get(id.as_str()).map(|i| (*i, *loc)))
                    .collect()
            })
            .collect();
        if let Some(cycle) = graph::find_cycle(&known, &edges) {
            return Err(self.err(
                cycle.at,
                format!("dependency cycle: {}", show_cycle(&cycle.path)),
            ));
        }

        Ok(Pipeline {
            name,
            name_at,
            file: self.file.to_path_buf(),
            env,
            jobs,
        })
    }

    /// One job; also returns where each `needs` entry is.
    fn job(
        &self,
        entry: &Entry,
        known: &[&str],
        index: &HashMap<&str, usize>,
        pipeline_env: &BTreeMap<String, String>,
    ) -> Result<(Job, Vec<Location>), SpecError> {
        let id = entry.key.as_str();
        if !names::is_id(id) {
            return Err(self.err(
                entry.key_loc,
                format!("invalid job id {} (expected {ID_RULE})", quote(id)),
            ));
        }
        let ctx = format!("in job {}", quote(id));
        let node = &entry.value;
        let map = self.map(node, "a mapping with steps", &format!("job {}", quote(id)))?;
        self.known_keys(map, JOB_KEYS, &ctx)?;

        let (needs, needs_at) = match get(map, "needs") {
            Some(e) => self.needs(&e.value, id, known, index)?,
            None => (Vec::new(), Vec::new()),
        };
        let image = match get(map, "image") {
            Some(e) => self.image(&e.value, &ctx)?,
            None => Image::Host,
        };
        let source = match get(map, "source") {
            Some(e) => self.source(&e.value, &ctx)?,
            None => self
                .default_source
                .clone()
                .map_err(|why| self.err(entry.key_loc, why))?,
        };
        let workdir = match get(map, "workdir") {
            Some(e) => {
                let text = self.text(&e.value, "an absolute path", &what("workdir", &ctx))?;
                paths::workdir(text).map_err(|why| {
                    self.err(
                        e.value.loc,
                        format!("invalid workdir {} {ctx}: {why}", quote(text)),
                    )
                })?
            }
            None => DEFAULT_WORKDIR.to_owned(),
        };
        let env = match get(map, "env") {
            Some(e) => self.env(&e.value, &format!("job {}", quote(id)))?,
            None => BTreeMap::new(),
        };
        let secrets = match get(map, "secrets") {
            Some(e) => self.secrets(&e.value, id, pipeline_env, &env)?,
            None => Vec::new(),
        };
        let network = match get(map, "network") {
            Some(e) => self.network(&e.value, id)?,
            None => Network::None,
        };
        let resources = match get(map, "resources") {
            Some(e) => self.resources(&e.value, id)?,
            None => Resources::default(),
        };
        let steps = self.required(node, map, "steps", &ctx, "expected a list of steps")?;
        let steps = self.steps(&steps.value, id)?;
        let artifacts = match get(map, "artifacts") {
            Some(e) => self.artifacts(&e.value, &ctx)?,
            None => Vec::new(),
        };

        let job = Job {
            id: id.to_owned(),
            location: entry.key_loc,
            needs,
            image,
            source,
            workdir,
            env,
            secrets,
            network,
            resources,
            steps,
            artifacts,
        };
        Ok((job, needs_at))
    }

    fn needs(
        &self,
        node: &Node,
        id: &str,
        known: &[&str],
        index: &HashMap<&str, usize>,
    ) -> Result<(Vec<String>, Vec<Location>), SpecError> {
        let ctx = format!("in job {}", quote(id));
        let items = self.list(node, "a list of job ids", &what("needs", &ctx))?;
        let mut needs: Vec<String> = Vec::with_capacity(items.len());
        let mut at = Vec::with_capacity(items.len());
        let mut seen: HashMap<&str, Location> = HashMap::new();
        for item in items {
            let need = self.text(item, "a job id", &format!("an entry of \"needs\" {ctx}"))?;
            if need == id {
                return Err(self.err(
                    item.loc,
                    format!(
                        "job {} needs itself (expected ids of other jobs)",
                        quote(id)
                    ),
                ));
            }
            if !index.contains_key(need) {
                return Err(self.err(
                    item.loc,
                    format!(
                        "unknown job {} in needs of job {} (known jobs: {})",
                        quote(need),
                        quote(id),
                        list_ids(known)
                    ),
                ));
            }
            if let Some(first) = seen.get(need) {
                let line = first.line;
                return Err(self.err(
                    item.loc,
                    format!(
                        "job {} is listed twice in needs of job {} (first at line {line})",
                        quote(need),
                        quote(id)
                    ),
                ));
            }
            seen.insert(need, item.loc);
            needs.push(need.to_owned());
            at.push(item.loc);
        }
        Ok((needs, at))
    }

    fn image(&self, node: &Node, ctx: &str) -> Result<Image, SpecError> {
        let expected = "\"host\" or an OCI image reference";
        let text = self.text(node, expected, &what("image", ctx))?;
        if text == "host" {
            return Ok(Image::Host);
        }
        if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(self.err(
                node.loc,
                format!("invalid image {} {ctx} (expected {expected})", quote(text)),
            ));
        }
        Ok(Image::Oci(text.to_owned()))
    }

    fn source(&self, node: &Node, ctx: &str) -> Result<PathBuf, SpecError> {
        let text = self.text(node, "a directory path", &what("source", ctx))?;
        if text.is_empty() {
            return Err(self.err(
                node.loc,
                format!("expected a directory path for \"source\" {ctx}, found an empty string"),
            ));
        }
        directory(&self.base.join(text), text).map_err(|why| self.err(node.loc, why))
    }

    /// An environment variable name: the rule, and not reserved.
    fn env_name(&self, name: &str, at: Location, ctx: &str) -> Result<(), SpecError> {
        if !names::is_env_name(name) {
            return Err(self.err(
                at,
                format!(
                    "invalid environment variable name {} {ctx} (expected {ENV_RULE})",
                    quote(name)
                ),
            ));
        }
        if name.starts_with(RESERVED_ENV_PREFIX) {
            return Err(self.err(
                at,
                format!(
                    "environment variable {} {ctx} is reserved (names starting with {RESERVED_ENV_PREFIX} are set by airlock)",
                    quote(name)
                ),
            ));
        }
        Ok(())
    }

    /// An `env` mapping of `owner` ("the pipeline" or `job "build"`).
    fn env(&self, node: &Node, owner: &str) -> Result<BTreeMap<String, String>, SpecError> {
        let entries = self.map(
            node,
            "a mapping of variable names to values",
            &format!("\"env\" of {owner}"),
        )?;
        let mut env = BTreeMap::new();
        for e in entries {
            self.env_name(&e.key, e.key_loc, &format!("in env of {owner}"))?;
            let value = e.value.as_any_scalar().ok_or_else(|| {
                self.wrong_type(
                    &e.value,
                    "a string, number or boolean",
                    &format!("{} in env of {owner}", quote(&e.key)),
                )
            })?;
            env.insert(e.key.clone(), value.to_owned());
        }
        Ok(env)
    }

    fn secrets(
        &self,
        node: &Node,
        id: &str,
        pipeline_env: &BTreeMap<String, String>,
        job_env: &BTreeMap<String, String>,
    ) -> Result<Vec<SecretRef>, SpecError> {
        let expected = "a list of secret names or { name, env } mappings";
        let ctx = format!("in job {}", quote(id));
        let secret_ctx = format!("in a secret of job {}", quote(id));
        let items = self.list(node, expected, &what("secrets", &ctx))?;
        let mut secrets: Vec<SecretRef> = Vec::with_capacity(items.len());
        let mut exported: HashMap<&str, &str> = HashMap::new();
        let mut requested: HashMap<&str, Location> = HashMap::new();
        for item in items {
            let (name, name_at, env) = match item.as_map() {
                Some(map) => {
                    self.known_keys(map, SECRET_KEYS, &secret_ctx)?;
                    let name = self.required(
                        item,
                        map,
                        "name",
                        &secret_ctx,
                        "expected the secret's name",
                    )?;
                    let text =
                        self.text(&name.value, "a secret name", &what("name", &secret_ctx))?;
                    let env = match get(map, "env") {
                        Some(e) => {
                            let var = self.text(
                                &e.value,
                                "an environment variable name",
                                &format!("\"env\" of secret {} {ctx}", quote(text)),
                            )?;
                            Some((var, e.value.loc))
                        }
                        None => None,
                    };
                    (text, name.value.loc, env)
                }
                None => {
                    let text = self.text(
                        item,
                        "a secret name or { name, env }",
                        &format!("an entry of \"secrets\" {ctx}"),
                    )?;
                    (text, item.loc, None)
                }
            };
            if !names::is_secret_name(name) {
                return Err(self.err(
                    name_at,
                    format!(
                        "invalid secret name {} {ctx} (expected {SECRET_RULE})",
                        quote(name)
                    ),
                ));
            }
            if let Some(first) = requested.insert(name, name_at) {
                return Err(self.err(
                    name_at,
                    format!(
                        "secret {} is requested twice {ctx} (first at line {})",
                        quote(name),
                        first.line
                    ),
                ));
            }
            if let Some((var, var_at)) = env {
                let var_ctx = format!("for secret {} {ctx}", quote(name));
                self.env_name(var, var_at, &var_ctx)?;
                if let Some(other) = exported.get(var) {
                    return Err(self.err(
                        var_at,
                        format!(
                            "environment variable {} is already set by secret {} {ctx} (expected a distinct name)",
                            quote(var),
                            quote(other)
                        ),
                    ));
                }
                if pipeline_env.contains_key(var) || job_env.contains_key(var) {
                    return Err(self.err(
                        var_at,
                        format!(
                            "environment variable {} {var_ctx} is also set by env (expected a distinct name)",
                            quote(var)
                        ),
                    ));
                }
                exported.insert(var, name);
            }
            secrets.push(SecretRef {
                name: name.to_owned(),
                env: env.map(|(var, _)| var.to_owned()),
                location: name_at,
            });
        }
        Ok(secrets)
    }

    fn network(&self, node: &Node, id: &str) -> Result<Network, SpecError> {
        let ctx = format!("in job {}", quote(id));
        let expected = "\"none\" or { egress: [\"host:port\", ...] }";
        if let Some(text) = node.as_text() {
            if text == "none" {
                return Ok(Network::None);
            }
            return Err(self.err(
                node.loc,
                format!(
                    "invalid network {} {ctx} (expected {expected})",
                    quote(text)
                ),
            ));
        }
        let map = self.map(node, expected, &what("network", &ctx))?;
        let net_ctx = format!("in network of job {}", quote(id));
        self.known_keys(map, NETWORK_KEYS, &net_ctx)?;
        let egress = self.required(
            node,
            map,
            "egress",
            &net_ctx,
            "expected a list of host:port patterns",
        )?;
        let items = self.list(
            &egress.value,
            "a list of host:port patterns",
            &what("egress", &net_ctx),
        )?;
        let mut patterns: Vec<String> = Vec::with_capacity(items.len());
        let mut seen: HashSet<String> = HashSet::new();
        for item in items {
            let text = self.text(
                item,
                "a host:port pattern",
                &format!("an entry of \"egress\" {ctx}"),
            )?;
            let pattern = egress::pattern(text).map_err(|why| {
                self.err(
                    item.loc,
                    format!("invalid egress pattern {} {ctx}: {why}", quote(text)),
                )
            })?;
            if !seen.insert(pattern.clone()) {
                return Err(self.err(
                    item.loc,
                    format!("egress pattern {} is listed twice {ctx}", quote(&pattern)),
                ));
            }
            patterns.push(pattern);
        }
        Ok(Network::Egress(patterns))
    }

    fn resources(&self, node: &Node, id: &str) -> Result<Resources, SpecError> {
        let ctx = format!("in resources of job {}", quote(id));
        let map = self.map(
            node,
            "a mapping of cpus, memory, pids, disk, timeout",
            &format!("\"resources\" in job {}", quote(id)),
        )?;
        self.known_keys(map, RESOURCE_KEYS, &ctx)?;
        let mut resources = Resources::default();
        for e in map {
            let v = &e.value;
            let what = what(&e.key, &ctx);
            match e.key.as_str() {
                "cpus" => {
                    if !matches!(v.kind(), Some(Kind::Int | Kind::Float)) {
                        return Err(self.wrong_type(v, "a number of cpus like 1.5", &what));
                    }
                    // A number's text is digits, signs, dots and letters:
                    // safe to show unquoted.
                    let text = v.as_text().unwrap_or_default();
                    match text.parse::<f64>() {
                        Ok(cpus) if cpus.is_finite() && cpus > 0.0 && cpus <= MAX_CPUS => {
                            resources.cpus = Some(cpus);
                        }
                        _ => {
                            return Err(self.err(
                                v.loc,
                                format!(
                                    "invalid cpus {text} {ctx} (expected a number greater than 0 and at most 1024)"
                                ),
                            ))
                        }
                    }
                }
                "memory" => resources.memory = Some(self.size(v, &what)?),
                "disk" => resources.disk = self.size(v, &what)?,
                "pids" => {
                    let expected = "a whole number of processes";
                    let number = match v.kind() {
                        Some(Kind::Int) => v.as_text().and_then(|t| t.parse::<u64>().ok()),
                        _ => None,
                    };
                    let Some(pids) = number.filter(|n| (1..=MAX_PIDS).contains(n)) else {
                        if v.kind() == Some(Kind::Int) {
                            return Err(self.err(
                                v.loc,
                                format!(
                                    "invalid pids {} {ctx} (expected a whole number from 1 to {MAX_PIDS})",
                                    v.as_text().unwrap_or_default()
                                ),
                            ));
                        }
                        return Err(self.wrong_type(v, expected, &what));
                    };
                    resources.pids = Some(pids);
                }
                "timeout" => resources.timeout = self.duration(v, &what)?,
                _ => {}
            }
        }
        Ok(resources)
    }

    fn size(&self, node: &Node, what: &str) -> Result<u64, SpecError> {
        let text = self.text(node, "a size like 512MiB", what)?;
        units::parse_size(text).map_err(|why| {
            self.err(
                node.loc,
                format!("invalid size {} for {what}: {why}", quote(text)),
            )
        })
    }

    fn duration(&self, node: &Node, what: &str) -> Result<Duration, SpecError> {
        let text = self.text(node, "a duration like 30s, 10m or 1h", what)?;
        units::parse_duration(text).map_err(|why| {
            self.err(
                node.loc,
                format!("invalid duration {} for {what}: {why}", quote(text)),
            )
        })
    }

    fn steps(&self, node: &Node, id: &str) -> Result<Vec<Step>, SpecError> {
        let ctx = format!("in job {}", quote(id));
        let items = self.list(node, "a list of steps", &what("steps", &ctx))?;
        if items.is_empty() {
            return Err(self.err(
                node.loc,
                format!(
                    "expected at least one step in \"steps\" of job {}",
                    quote(id)
                ),
            ));
        }
        let mut steps = Vec::with_capacity(items.len());
        for (n, item) in items.iter().enumerate() {
            let step_ctx = format!("in step {} of job {}", n + 1, quote(id));
            let step = match item.as_map() {
                Some(map) => {
                    self.known_keys(map, STEP_KEYS, &step_ctx)?;
                    let run =
                        self.required(item, map, "run", &step_ctx, "expected the script to run")?;
                    let script = self.run(&run.value, &step_ctx, false)?;
                    let name = match get(map, "name") {
                        Some(e) => {
                            let name =
                                self.text(&e.value, "a step name", &what("name", &step_ctx))?;
                            if name.trim().is_empty() {
                                return Err(self.err(
                                    e.value.loc,
                                    format!("expected a non-empty step name {step_ctx}"),
                                ));
                            }
                            name.to_owned()
                        }
                        None => default_step_name(&script),
                    };
                    let timeout = match get(map, "timeout") {
                        Some(e) => Some(self.duration(&e.value, &what("timeout", &step_ctx))?),
                        None => None,
                    };
                    Step {
                        name,
                        run: script,
                        timeout,
                    }
                }
                None => {
                    let script = self.run(item, &step_ctx, true)?;
                    Step {
                        name: default_step_name(&script),
                        run: script,
                        timeout: None,
                    }
                }
            };
            steps.push(step);
        }
        Ok(steps)
    }

    /// The script of a step: `node` is the value of `run`, or the whole
    /// step in the shorthand form (`shorthand`).
    fn run(&self, node: &Node, step_ctx: &str, shorthand: bool) -> Result<String, SpecError> {
        let script = if shorthand {
            let what = step_ctx.strip_prefix("in ").unwrap_or(step_ctx);
            self.text(node, "a script or a mapping with run", what)?
        } else {
            self.text(node, "a script (a string)", &what("run", step_ctx))?
        };
        if script.trim().is_empty() {
            return Err(self.err(
                node.loc,
                format!("expected a non-empty script for \"run\" {step_ctx}"),
            ));
        }
        Ok(script.to_owned())
    }

    fn artifacts(&self, node: &Node, ctx: &str) -> Result<Vec<String>, SpecError> {
        let items = self.list(
            node,
            "a list of paths relative to the workdir",
            &what("artifacts", ctx),
        )?;
        let mut artifacts: Vec<String> = Vec::with_capacity(items.len());
        let mut seen: HashSet<String> = HashSet::new();
        for item in items {
            let text = self.text(
                item,
                "a path relative to the workdir",
                &format!("an entry of \"artifacts\" {ctx}"),
            )?;
            let path = paths::artifact(text).map_err(|why| {
                self.err(
                    item.loc,
                    format!("invalid artifact path {} {ctx}: {why}", quote(text)),
                )
            })?;
            if !seen.insert(path.clone()) {
                return Err(self.err(
                    item.loc,
                    format!("artifact {} is listed twice {ctx}", quote(&path)),
                ));
            }
            artifacts.push(path);
        }
        Ok(artifacts)
    }
}

/// `path`, canonical, if it is a directory; else why not. `text` is how
/// the file wrote it.
fn directory(path: &Path, text: &str) -> Result<PathBuf, String> {
    match path.canonicalize() {
        Ok(real) if real.is_dir() => Ok(real),
        Ok(real) => Err(format!(
            "source {} is not a directory (resolved to {}; expected a directory)",
            quote(text),
            quote(&real.to_string_lossy())
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(format!(
            "source directory {} does not exist (looked for {}; expected a directory relative to the pipeline file)",
            quote(text),
            quote(&path.to_string_lossy())
        )),
        Err(e) => Err(format!("cannot use source directory {}: {e}", quote(text))),
    }
}

/// A cycle for a message: `a -> b -> a`, long ones shortened in the middle.
fn show_cycle(path: &[String]) -> String {
    const ENDS: usize = 8;
    if path.len() <= 2 * ENDS + 1 {
        return path.join(" -> ");
    }
    let head = path.get(..ENDS).unwrap_or_default().join(" -> ");
    let tail = path
        .get(path.len() - ENDS..)
        .unwrap_or_default()
        .join(" -> ");
    format!("{head} -> … {} more … -> {tail}", path.len() - 2 * ENDS)
}

/// Job ids for a message: at most 20, then how many more.
fn list_ids(ids: &[&str]) -> String {
    const SHOWN: usize = 20;
    let mut list = ids
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > SHOWN {
        list.push_str(&format!(" and {} more", ids.len() - SHOWN));
    }
    list
}

/// A step's name when it has none: the first non-empty line of its script,
/// trimmed, at most [`STEP_NAME_CHARS`] characters ("…" marks a cut).
pub(crate) fn default_step_name(script: &str) -> String {
    let line = script
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    if line.chars().count() <= STEP_NAME_CHARS {
        return line.to_owned();
    }
    let mut name: String = line.chars().take(STEP_NAME_CHARS - 1).collect();
    name.push('…');
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_cycles_are_shortened() {
        let path: Vec<String> = (0..100).chain([0]).map(|i| format!("j{i}")).collect();
        let shown = show_cycle(&path);
        assert!(shown.starts_with("j0 -> j1 -> "), "{shown}");
        assert!(shown.contains(" -> … 85 more … -> "), "{shown}");
        assert!(shown.ends_with("j98 -> j99 -> j0"), "{shown}");
        let short: Vec<String> = ["a", "b", "a"].map(String::from).to_vec();
        assert_eq!(show_cycle(&short), "a -> b -> a");
    }

    #[test]
    fn step_names() {
        assert_eq!(
            default_step_name("\n\n  make all  \nmake install"),
            "make all"
        );
        assert_eq!(default_step_name("   "), "");
        let long = "x".repeat(80);
        let name = default_step_name(&long);
        assert_eq!(name.chars().count(), 60);
        assert!(name.ends_with('…'));
        assert_eq!(default_step_name(&"é".repeat(60)), "é".repeat(60));
    }
}
