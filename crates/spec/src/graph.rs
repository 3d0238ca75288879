//! The job graph: `needs` edges, cycle detection, topological order and
//! selection of jobs with everything they need.

use std::collections::{BTreeSet, HashMap};

use crate::error::UnknownJob;
use crate::model::{Location, Pipeline};

/// A dependency cycle found by [`find_cycle`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Cycle {
    /// Job ids along the cycle, the first repeated at the end.
    pub path: Vec<String>,
    /// Where the `needs` entry that closes the cycle is.
    pub at: Location,
}

/// Finds a cycle in the `needs` graph, if there is one.
///
/// `needs[j]` lists the indices job `j` needs with the positions of the
/// entries. Depth-first in file order, iteratively (a long chain of jobs
/// cannot exhaust the stack). Reports the first back edge met.
pub(crate) fn find_cycle(ids: &[&str], needs: &[Vec<(usize, Location)>]) -> Option<Cycle> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks = vec![Mark::New; ids.len()];
    for start in 0..ids.len() {
        if marks.get(start) != Some(&Mark::New) {
            continue;
        }
        // (job, index of the next need to follow)
        let mut stack = vec![(start, 0usize)];
        if let Some(m) = marks.get_mut(start) {
            *m = Mark::Active;
        }
        while let Some(top) = stack.last_mut() {
            let (job, next) = *top;
            let Some(&(dep, at)) = needs.get(job).and_then(|n| n.get(next)) else {
                if let Some(m) = marks.get_mut(job) {
                    *m = Mark::Done;
                }
                stack.pop();
                continue;
            };
            top.1 += 1;
            match marks.get(dep) {
                Some(Mark::New) => {
                    if let Some(m) = marks.get_mut(dep) {
                        *m = Mark::Active;
                    }
                    stack.push((dep, 0));
                }
                Some(Mark::Active) => {
                    let from = stack.iter().position(|(j, _)| *j == dep).unwrap_or(0);
                    let mut path: Vec<String> = stack
                        .get(from..)
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|(j, _)| ids.get(*j).map(|s| (*s).to_owned()))
                        .collect();
                    path.extend(ids.get(dep).map(|s| (*s).to_owned()));
                    return Some(Cycle { path, at });
                }
                Some(Mark::Done) | None => {}
            }
        }
    }
    None
}

impl Pipeline {
    /// Indices of the jobs a job needs (ids not in the pipeline are
    /// skipped; validation guarantees there are none).
    fn need_indices(&self) -> Vec<Vec<usize>> {
        let index: HashMap<&str, usize> = self
            .jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (j.id.as_str(), i))
            .collect();
        self.jobs
            .iter()
            .map(|j| {
                j.needs
                    .iter()
                    .filter_map(|n| index.get(n.as_str()).copied())
                    .collect()
            })
            .collect()
    }

    /// Indices of all jobs in an order where every job comes after the jobs
    /// it needs. Stable: among jobs that are ready at the same time, file
    /// order wins.
    ///
    /// For a pipeline built by hand with a cycle, the jobs on and behind the
    /// cycle come last, in file order.
    pub fn topo_order(&self) -> Vec<usize> {
        let needs = self.need_indices();
        let mut waiting_on: Vec<usize> = needs.iter().map(Vec::len).collect();
        let mut needed_by: Vec<Vec<usize>> = vec![Vec::new(); self.jobs.len()];
        for (job, deps) in needs.iter().enumerate() {
            for &dep in deps {
                if let Some(v) = needed_by.get_mut(dep) {
                    v.push(job);
                }
            }
        }
        let mut ready: BTreeSet<usize> = waiting_on
            .iter()
            .enumerate()
            .filter(|(_, n)| **n == 0)
            .map(|(i, _)| i)
            .collect();
        let mut order = Vec::with_capacity(self.jobs.len());
        let mut placed = vec![false; self.jobs.len()];
        while let Some(job) = ready.pop_first() {
            order.push(job);
            if let Some(p) = placed.get_mut(job) {
                *p = true;
            }
            for &next in needed_by.get(job).map(Vec::as_slice).unwrap_or_default() {
                if let Some(n) = waiting_on.get_mut(next) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        ready.insert(next);
                    }
                }
            }
        }
        order.extend(
            placed
                .iter()
                .enumerate()
                .filter(|(_, p)| !**p)
                .map(|(i, _)| i),
        );
        order
    }

    /// Indices of the jobs named in `ids` and of every job they need,
    /// directly or not, in [`topo_order`](Self::topo_order).
    ///
    /// An empty `ids` selects nothing. An id the pipeline does not have is
    /// an error that lists the known ids.
    pub fn select(&self, ids: &[String]) -> Result<Vec<usize>, UnknownJob> {
        let needs = self.need_indices();
        let mut selected = vec![false; self.jobs.len()];
        let mut todo = Vec::new();
        for id in ids {
            let Some(index) = self.jobs.iter().position(|j| &j.id == id) else {
                return Err(UnknownJob {
                    id: id.clone(),
                    known: self.jobs.iter().map(|j| j.id.clone()).collect(),
                });
            };
            todo.push(index);
        }
        while let Some(job) = todo.pop() {
            match selected.get_mut(job) {
                Some(s) if !*s => {
                    *s = true;
                    todo.extend(needs.get(job).into_iter().flatten().copied());
                }
                _ => {}
            }
        }
        Ok(self
            .topo_order()
            .into_iter()
            .filter(|&i| selected.get(i).copied().unwrap_or(false))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Image, Job, Network, Resources, Step};
    use std::path::PathBuf;

    fn job(id: &str, needs: &[&str]) -> Job {
        Job {
            id: id.into(),
            location: Location::default(),
            needs: needs.iter().map(|s| (*s).to_owned()).collect(),
            image: Image::Host,
            source: PathBuf::from("/"),
            workdir: "/workspace".into(),
            env: Default::default(),
            secrets: Vec::new(),
            network: Network::None,
            resources: Resources::default(),
            steps: vec![Step {
                name: "s".into(),
                run: "true".into(),
                timeout: None,
            }],
            artifacts: Vec::new(),
        }
    }

    fn pipeline(jobs: Vec<Job>) -> Pipeline {
        Pipeline {
            name: "p".into(),
            name_at: None,
            file: PathBuf::from("p.yml"),
            env: Default::default(),
            jobs,
        }
    }

    fn ids(p: &Pipeline, order: &[usize]) -> Vec<String> {
        order.iter().map(|&i| p.jobs[i].id.clone()).collect()
    }

    fn diamond() -> Pipeline {
        // deploy needs test and docs; both need build. Listed out of order.
        pipeline(vec![
            job("deploy", &["test", "docs"]),
            job("docs", &["build"]),
            job("lint", &[]),
            job("test", &["build"]),
            job("build", &[]),
        ])
    }

    #[test]
    fn topo_order_diamond_is_stable() {
        let p = diamond();
        assert_eq!(
            ids(&p, &p.topo_order()),
            ["lint", "build", "docs", "test", "deploy"]
        );
    }

    #[test]
    fn topo_order_without_needs_is_file_order() {
        let p = pipeline(vec![job("c", &[]), job("a", &[]), job("b", &[])]);
        assert_eq!(p.topo_order(), [0, 1, 2]);
    }

    #[test]
    fn topo_order_survives_a_hand_made_cycle() {
        let p = pipeline(vec![job("a", &["b"]), job("b", &["a"]), job("c", &[])]);
        assert_eq!(ids(&p, &p.topo_order()), ["c", "a", "b"]);
    }

    #[test]
    fn select_pulls_in_transitive_needs() {
        let p = diamond();
        let sel = p.select(&["deploy".into()]).unwrap();
        assert_eq!(ids(&p, &sel), ["build", "docs", "test", "deploy"]);
        let sel = p.select(&["docs".into()]).unwrap();
        assert_eq!(ids(&p, &sel), ["build", "docs"]);
        let sel = p
            .select(&["lint".into(), "build".into(), "lint".into()])
            .unwrap();
        assert_eq!(ids(&p, &sel), ["lint", "build"]);
        assert!(p.select(&[]).unwrap().is_empty());
    }

    #[test]
    fn select_unknown_lists_known() {
        let err = diamond().select(&["deplyo".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown job \"deplyo\" (known jobs: deploy, docs, lint, test, build)"
        );
    }

    #[test]
    fn cycles() {
        let at = |line| Location { line, col: 1 };
        let ids = ["a", "b", "c", "d"];
        // d -> a -> b -> c -> a
        let needs = vec![
            vec![(1, at(1))],
            vec![(2, at(2))],
            vec![(0, at(3))],
            vec![(0, at(4))],
        ];
        let cycle = find_cycle(&ids, &needs).unwrap();
        assert_eq!(cycle.path, ["a", "b", "c", "a"]);
        assert_eq!(cycle.at, at(3));
        let acyclic = vec![
            vec![(1, at(1)), (2, at(1))],
            vec![(2, at(2))],
            vec![],
            vec![],
        ];
        assert_eq!(find_cycle(&ids, &acyclic), None);
    }

    #[test]
    fn long_chain_does_not_overflow() {
        let n = 100_000;
        let names: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        let ids: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut needs: Vec<Vec<(usize, Location)>> =
            (0..n).map(|i| vec![(i + 1, Location::default())]).collect();
        needs[n - 1] = vec![(0, Location::default())];
        let cycle = find_cycle(&ids, &needs).unwrap();
        assert_eq!(cycle.path.len(), n + 1);
    }
}
