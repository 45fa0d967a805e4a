//! The plugin sink (`[sinks.plugin]`): the outputs of a stack that keyd's Docker secret-provider
//! plugin serves (`docker secret create --driver keyd …`, see `sinks::plugin` for the labels).
//! Nothing is written anywhere: the plugin reads the store. But a task fetches a driver-backed
//! secret only when it starts, so when an output's value changes, every service using a
//! driver-backed Swarm secret that stands for it gets its `ForceUpdate` bumped (a rolling
//! update, new task started first, rolled back on failure), and the pass waits until the new
//! tasks run. The store records a keyed digest of the value the services last fetched, so a
//! pass that changed nothing restarts nothing, and an interrupted pass is completed by the next.

use std::collections::BTreeMap;

use super::plugin::{self, StackMap};
use super::swarm::{engine_for, key_of, keyed_digest};
use super::{Delivery, DeliveryReport, Pass, Sink, SinkError};
use crate::docker::{DockerError, Engine};
use crate::policy::PluginSpec;
use crate::store::SinkRecords;

const SINK: &str = "plugin";

/// Restarts the tasks of services whose driver-backed secrets changed value.
pub struct PluginSink {
    spec: PluginSpec,
}

impl PluginSink {
    /// A sink with these settings.
    pub fn new(spec: PluginSpec) -> Self {
        Self { spec }
    }

    fn fail(&self, source: DockerError) -> SinkError {
        SinkError::Docker {
            location: self.spec.driver.clone().into(),
            source,
        }
    }

    /// Whether a Swarm secret's driver is this sink's plugin (a managed plugin is listed with
    /// its tag, `keyd:latest` for `keyd`).
    fn is_ours(&self, driver: Option<&str>) -> bool {
        driver.is_some_and(|d| {
            d == self.spec.driver || d.strip_suffix(":latest") == Some(self.spec.driver.as_str())
        })
    }

    /// Bumps `ForceUpdate` of every service of this stack using a secret of `ids` (a service
    /// the plugin serves another stack, or nothing, would not be given this stack's value
    /// anyway); waits for each update.
    fn restart(&self, engine: &Engine, ids: &[String]) -> Result<Vec<String>, SinkError> {
        let map = StackMap::for_stack(&self.spec.stack, self.spec.namespace(), self.spec.unstacked);
        let (done, mut failures) = engine
            .roll(SINK, self.spec.update_timeout, |spec| {
                let namespace = spec.labels.as_ref().and_then(StackMap::namespace_of);
                if map.stack_for(namespace).is_err() {
                    return false;
                }
                let Some(task) = spec.task_template.as_mut() else {
                    return false;
                };
                let uses = task
                    .container_spec
                    .as_ref()
                    .and_then(|c| c.secrets.as_ref())
                    .is_some_and(|refs| {
                        refs.iter()
                            .any(|r| r.secret_id.as_ref().is_some_and(|id| ids.contains(id)))
                    });
                if uses {
                    task.force_update = Some(task.force_update.unwrap_or(0).wrapping_add(1));
                }
                uses
            })
            .map_err(|e| self.fail(e))?;
        match failures.len() {
            0 => Ok(done),
            1 => Err(self.fail(failures.remove(0))),
            _ => Err(SinkError::Several(
                failures.into_iter().map(|e| self.fail(e)).collect(),
            )),
        }
    }
}

impl Sink for PluginSink {
    fn kind(&self) -> &'static str {
        SINK
    }

    /// The plugin serves any value the store holds.
    fn check(&self, _deliveries: &[Delivery]) -> Result<(), SinkError> {
        Ok(())
    }

    fn deliver(
        &self,
        deliveries: &[Delivery],
        pass: Pass<'_>,
        records: &mut SinkRecords<'_>,
    ) -> Result<DeliveryReport, SinkError> {
        let mut report = DeliveryReport {
            sink: SINK.into(),
            location: self.spec.driver.clone().into(),
            ..Default::default()
        };
        let key = key_of(records.swarm);
        let mut changed: BTreeMap<&str, String> = BTreeMap::new();
        for d in deliveries.iter().filter(|d| pass.includes(&d.name)) {
            let digest = keyed_digest(&key, d.value.expose().as_bytes());
            match records.swarm.served.get(&d.name) {
                Some(last) if *last == digest => report.unchanged.push(d.name.clone()),
                // First sight: services that use it fetched this value when they started.
                None => {
                    records.swarm.served.insert(d.name.clone(), digest);
                    report.unchanged.push(d.name.clone());
                }
                Some(_) => {
                    changed.insert(&d.name, digest);
                }
            }
        }
        if changed.is_empty() {
            return Ok(report);
        }
        let engine = engine_for(self.spec.timeout).map_err(|e| self.fail(e))?;
        let ids: Vec<String> = engine
            .secrets()
            .map_err(|e| self.fail(e))?
            .into_iter()
            .filter(|s| self.is_ours(s.driver.as_deref()))
            .filter(|s| {
                let labels: BTreeMap<String, String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                changed
                    .keys()
                    .any(|name| plugin::serves(&s.name, &labels, &self.spec.stack, name))
            })
            .map(|s| s.id)
            .collect();
        if !ids.is_empty() {
            self.restart(&engine, &ids)?;
        }
        for (name, digest) in changed {
            records.swarm.served.insert(name.to_owned(), digest);
            report.written.push(name.to_owned());
        }
        Ok(report)
    }
}
