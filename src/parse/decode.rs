//! From lexed samples to a [`NodeScrape`]: which series mean what, units, and which points are
//! complete enough to keep.
//!
//! Owns the series names the kubelet writes on `/metrics/resource` and the rules for dropping
//! incomplete points. Looks at a sample's name before its labels, so series it does not use cost a
//! line split and a name scan only.
//!
//! Containers are found again by `(namespace, pod, container)`. The kubelet writes every container
//! series family in the same order, so the decoder first tries the slot after the one the previous
//! line used (a few byte comparisons), or the first slot when a family starts over. The kubelet
//! also sorts each family's lines, so while new containers arrive in strictly increasing order none
//! can be a repeat, and they are appended without a lookup. Only when a line breaks both patterns
//! is a hash index of the containers built, and used from then on.

use std::borrow::Cow;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::text::{classify, same_bytes, Entry, Lines, Sample, SeriesLine};
use super::{DecodeError, DecodeStats, Decoded, SkipReason};
use crate::model::{
    ContainerScrape, MetricsPoint, NodeScrape, PodScrape, ScrapedContainers, UnixNanos,
};

/// Nanoseconds per millisecond (sample timestamps are milliseconds).
const NANOS_PER_MILLI: i64 = 1_000_000;
/// Nanoseconds per second, as a float for the seconds-valued series.
const NANOS_PER_SECOND: f64 = 1e9;

/// The series this decoder understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Series {
    NodeCpu,
    NodeMemory,
    ContainerCpu,
    ContainerMemory,
    ContainerStartTime,
    /// `pod_cpu_usage_seconds_total` / `pod_memory_working_set_bytes`: known, and deliberately
    /// unused, as upstream does (pod totals are the sum of containers plus the pod sandbox).
    PodTotal,
    ScrapeError,
    /// Other series the kubelet writes there (swap) that metrics.k8s.io has no field for.
    Ignored,
}

/// Every series name the decoder knows. Only the first byte is compared before a full comparison,
/// so the order matters little; the busiest families come first.
const SERIES: [(&str, Series); 11] = [
    ("container_cpu_usage_seconds_total", Series::ContainerCpu),
    (
        "container_memory_working_set_bytes",
        Series::ContainerMemory,
    ),
    ("container_start_time_seconds", Series::ContainerStartTime),
    ("node_cpu_usage_seconds_total", Series::NodeCpu),
    ("node_memory_working_set_bytes", Series::NodeMemory),
    ("pod_cpu_usage_seconds_total", Series::PodTotal),
    ("pod_memory_working_set_bytes", Series::PodTotal),
    ("resource_scrape_error", Series::ScrapeError),
    ("scrape_error", Series::ScrapeError),
    // Not used, listed so they are ignored without a scan of their name.
    ("container_swap_usage_bytes", Series::Ignored),
    ("node_swap_usage_bytes", Series::Ignored),
];

/// The fast path: a line that starts (with no leading blank) with a name from [`SERIES`].
///
/// `last` is the index in [`SERIES`] of the previous line's series and is tried first: samples of
/// one family are written together, so it is right for all but a family's first line.
#[inline]
fn known_series<'a>(line: &'a [u8], last: &mut usize) -> Option<(Series, SeriesLine<'a>)> {
    let (name, series) = SERIES[*last];
    if let Some(line) = SeriesLine::with_name(line, name) {
        return Some((series, line));
    }
    let first = *line.first()?;
    SERIES
        .iter()
        .enumerate()
        .find_map(|(index, &(name, series))| {
            if name.as_bytes()[0] != first {
                return None;
            }
            let line = SeriesLine::with_name(line, name)?;
            *last = index;
            Some((series, line))
        })
}

/// The slow path, for lines the fast path did not recognise (leading blanks, unknown names).
fn series(name: &str) -> Option<Series> {
    SERIES
        .iter()
        .find(|(known, _)| *known == name)
        .map(|&(_, series)| series)
}

/// A CPU sample: nanocore-seconds and its time.
#[derive(Clone, Copy, Debug)]
struct Cpu {
    nanos: u64,
    timestamp: UnixNanos,
}

struct PodSlot<'a> {
    namespace: Cow<'a, str>,
    name: Cow<'a, str>,
}

struct ContainerSlot<'a> {
    pod: usize,
    name: Cow<'a, str>,
    cpu: Option<Cpu>,
    memory: Option<u64>,
    start_time: UnixNanos,
}

/// Everything gathered so far from one body.
struct Accumulator<'a> {
    request_time: UnixNanos,
    node_cpu: Option<Cpu>,
    node_memory: Option<u64>,
    pods: Vec<PodSlot<'a>>,
    containers: Vec<ContainerSlot<'a>>,
    /// Indices into `pods`, hashed by `(namespace, name)`.
    pod_index: HashTable<usize>,
    /// Indices into `containers`, hashed by `(namespace, pod, container)`; built on the first
    /// line the guesses in [`Self::container_slot`] do not place. While it is `None`, every
    /// container was appended in strictly increasing [`key_order`].
    container_index: Option<HashTable<usize>>,
    hasher: foldhash::fast::RandomState,
    /// The slot the next container line most likely names (see the module docs).
    cursor: usize,
    stats: DecodeStats,
}

/// The labels a container series must carry.
struct ContainerKey<'a> {
    namespace: Cow<'a, str>,
    pod: Cow<'a, str>,
    container: Cow<'a, str>,
}

pub(super) fn decode(body: &[u8], request_time: UnixNanos) -> Result<Decoded<'_>, DecodeError> {
    let mut acc = Accumulator::new(request_time, body.len());
    let mut last_series = 0;
    for line in Lines::new(body) {
        let (series, line) = match known_series(line, &mut last_series) {
            Some(found) => found,
            None => match classify(line) {
                Entry::Blank | Entry::Comment(_) => {
                    acc.stats.comments += 1;
                    continue;
                }
                Entry::Invalid(error) => {
                    acc.stats.skip(error.into());
                    continue;
                }
                Entry::Series(line) => match series(line.name) {
                    Some(series) => (series, line),
                    None => {
                        acc.stats.ignored_series += 1;
                        continue;
                    }
                },
            },
        };
        if matches!(series, Series::PodTotal | Series::Ignored) {
            acc.stats.ignored_series += 1;
            continue;
        }
        if matches!(
            series,
            Series::ContainerCpu | Series::ContainerMemory | Series::ContainerStartTime
        ) {
            // Nearly every line of a body; the kubelet's exact shape parses in one pass.
            if let Some((labels, sample)) = line.kubelet_container_sample() {
                let key = ContainerKey {
                    namespace: Cow::Borrowed(labels.namespace),
                    pod: Cow::Borrowed(labels.pod),
                    container: Cow::Borrowed(labels.container),
                };
                acc.container_sample(series, key, &sample);
                continue;
            }
        }
        match line.sample() {
            Ok(sample) => acc.sample(series, &sample)?,
            Err(error) => acc.stats.skip(error.into()),
        }
    }
    Ok(acc.finish())
}

// === impl Accumulator ===

impl<'a> Accumulator<'a> {
    fn new(request_time: UnixNanos, body_len: usize) -> Self {
        // A kubelet writes about 600 bytes per container (four families plus the pod totals), so
        // this sizes the tables to grow at most once or twice; capped so a huge body of something
        // else cannot make us reserve much up front.
        let containers = (body_len / 600).min(16 * 1024);
        let pods = containers / 2;
        Accumulator {
            request_time,
            node_cpu: None,
            node_memory: None,
            pods: Vec::with_capacity(pods),
            containers: Vec::with_capacity(containers),
            pod_index: HashTable::with_capacity(pods),
            container_index: None,
            hasher: foldhash::fast::RandomState::default(),
            cursor: 0,
            stats: DecodeStats::default(),
        }
    }

    fn sample(&mut self, series: Series, sample: &Sample<'a>) -> Result<(), DecodeError> {
        match series {
            Series::ScrapeError => {
                if sample.value == 1.0 {
                    return Err(DecodeError::KubeletScrapeError);
                }
                self.stats.samples += 1;
            }
            Series::NodeCpu | Series::NodeMemory => {
                let Some((value, timestamp)) = self.usable(sample) else {
                    return Ok(());
                };
                if series == Series::NodeCpu {
                    self.node_cpu = Some(Cpu {
                        nanos: cpu_nanos(value),
                        timestamp,
                    });
                } else {
                    self.node_memory = Some(memory_bytes(value));
                }
                self.stats.samples += 1;
            }
            Series::ContainerCpu | Series::ContainerMemory | Series::ContainerStartTime => {
                match container_key(sample) {
                    Ok(key) => self.container_sample(series, key, sample),
                    Err(reason) => self.stats.skip(reason),
                }
            }
            Series::PodTotal | Series::Ignored => self.stats.ignored_series += 1,
        }
        Ok(())
    }

    /// A container series' sample whose labels are already picked out.
    #[inline]
    fn container_sample(&mut self, series: Series, key: ContainerKey<'a>, sample: &Sample<'a>) {
        // The slot exists even when the value turns out unusable, so that the container counts
        // as lacking that series and its pod is dropped rather than served partial.
        let slot = self.container_slot(key);
        let Some((value, timestamp)) = self.usable(sample) else {
            return;
        };
        let container = &mut self.containers[slot];
        match series {
            Series::ContainerCpu => {
                container.cpu = Some(Cpu {
                    nanos: cpu_nanos(value),
                    timestamp,
                });
            }
            Series::ContainerMemory => container.memory = Some(memory_bytes(value)),
            _ => container.start_time = seconds_to_nanos(value),
        }
        self.stats.samples += 1;
    }

    /// The value and the sample time in nanoseconds, or `None` (counted) when either is unusable.
    fn usable(&mut self, sample: &Sample<'_>) -> Option<(f64, UnixNanos)> {
        let value = sample.value;
        if value.is_nan() || value < 0.0 || value.is_infinite() {
            self.stats.skip(SkipReason::UnusableValue);
            return None;
        }
        let timestamp = match sample.timestamp_ms {
            None => self.request_time,
            Some(millis) => match millis.checked_mul(NANOS_PER_MILLI) {
                Some(nanos) => nanos,
                None => {
                    self.stats.skip(SkipReason::TimestampOutOfRange);
                    return None;
                }
            },
        };
        Some((value, timestamp))
    }

    /// Index of the container's slot, created (with its pod's) on first sight.
    fn container_slot(&mut self, key: ContainerKey<'a>) -> usize {
        // The kubelet's order: the line after the previous one's container, or a family
        // starting over at the first container.
        let guess = if self.cursor < self.containers.len() {
            Some(self.cursor)
        } else if self.container_index.is_none()
            && self
                .containers
                .last()
                .is_none_or(|last| key_order(&self.pods, last, &key).is_lt())
        {
            // Sorted and new: greater than every container so far, so not one of them.
            return self.append_container(key, None);
        } else {
            (!self.containers.is_empty()).then_some(0)
        };
        if let Some(slot) = guess {
            if self.matches(&self.containers[slot], &key) {
                self.cursor = slot + 1;
                return slot;
            }
        }
        let hash = self
            .hasher
            .hash_one((&*key.namespace, &*key.pod, &*key.container));
        let Accumulator {
            pods,
            containers,
            container_index,
            hasher,
            ..
        } = &mut *self;
        let index = container_index.get_or_insert_with(|| {
            let mut index = HashTable::with_capacity(containers.capacity());
            for (slot, container) in containers.iter().enumerate() {
                let hash = container_hash(hasher, pods, container);
                index.insert_unique(hash, slot, |&i| {
                    container_hash(hasher, pods, &containers[i])
                });
            }
            index
        });
        if let Some(&slot) = index.find(hash, |&i| slot_matches(pods, &containers[i], &key)) {
            self.cursor = slot + 1;
            return slot;
        }
        self.append_container(key, Some(hash))
    }

    /// Appends a container not seen before; `hash` is its key's, when the index exists.
    fn append_container(&mut self, key: ContainerKey<'a>, hash: Option<u64>) -> usize {
        let pod = self.pod_slot(key.namespace, key.pod);
        let slot = self.containers.len();
        self.containers.push(ContainerSlot {
            pod,
            name: key.container,
            cpu: None,
            memory: None,
            start_time: 0,
        });
        let Accumulator {
            pods,
            containers,
            container_index,
            hasher,
            ..
        } = self;
        if let (Some(index), Some(hash)) = (container_index, hash) {
            index.insert_unique(hash, slot, |&i| {
                container_hash(hasher, pods, &containers[i])
            });
        }
        self.cursor = slot + 1;
        slot
    }

    fn matches(&self, container: &ContainerSlot<'_>, key: &ContainerKey<'_>) -> bool {
        slot_matches(&self.pods, container, key)
    }

    fn pod_slot(&mut self, namespace: Cow<'a, str>, name: Cow<'a, str>) -> usize {
        let hash = self.hasher.hash_one((&*namespace, &*name));
        let Accumulator {
            pods,
            pod_index,
            hasher,
            ..
        } = self;
        if let Some(&pod) = pod_index.find(hash, |&i| {
            pods[i].namespace == namespace && pods[i].name == name
        }) {
            return pod;
        }
        let pod = pods.len();
        pods.push(PodSlot { namespace, name });
        pod_index.insert_unique(hash, pod, |&i| {
            hasher.hash_one((&*pods[i].namespace, &*pods[i].name))
        });
        pod
    }

    fn finish(self) -> Decoded<'a> {
        let node = match (self.node_cpu, self.node_memory) {
            (Some(cpu), Some(memory)) if cpu.timestamp != 0 && cpu.nanos != 0 && memory != 0 => {
                Some(MetricsPoint {
                    start_time: 0,
                    timestamp: cpu.timestamp,
                    cumulative_cpu_used: cpu.nanos,
                    memory_usage: memory,
                })
            }
            _ => None,
        };
        let mut complete = vec![true; self.pods.len()];
        let mut pods: Vec<PodScrape<'a>> = self
            .pods
            .into_iter()
            .map(|pod| PodScrape {
                namespace: pod.namespace,
                name: pod.name,
                containers: ScrapedContainers::new(),
            })
            .collect();
        for container in self.containers {
            let point = match (container.cpu, container.memory) {
                (Some(cpu), Some(memory)) if cpu.nanos != 0 && memory != 0 => MetricsPoint {
                    start_time: container.start_time,
                    timestamp: cpu.timestamp,
                    cumulative_cpu_used: cpu.nanos,
                    memory_usage: memory,
                },
                _ => {
                    complete[container.pod] = false;
                    continue;
                }
            };
            pods[container.pod].containers.push(ContainerScrape {
                name: container.name,
                point,
            });
        }
        let mut index = 0;
        pods.retain(|_| {
            index += 1;
            complete[index - 1]
        });
        Decoded {
            scrape: NodeScrape { node, pods },
            stats: self.stats,
        }
    }
}

/// A stored container's hash, as [`Accumulator::container_slot`] hashes a key.
fn container_hash(
    hasher: &foldhash::fast::RandomState,
    pods: &[PodSlot<'_>],
    container: &ContainerSlot<'_>,
) -> u64 {
    let pod = &pods[container.pod];
    hasher.hash_one((&*pod.namespace, &*pod.name, &*container.name))
}

fn slot_matches(
    pods: &[PodSlot<'_>],
    container: &ContainerSlot<'_>,
    key: &ContainerKey<'_>,
) -> bool {
    let pod = &pods[container.pod];
    same_bytes(container.name.as_bytes(), key.container.as_bytes())
        && same_bytes(pod.name.as_bytes(), key.pod.as_bytes())
        && same_bytes(pod.namespace.as_bytes(), key.namespace.as_bytes())
}

/// How a stored container's key orders against `key`: by container, then namespace, then pod, as
/// the kubelet sorts a family's lines. Any strict order would keep appends free of repeats; this
/// one makes the kubelet's lines arrive increasing.
fn key_order(
    pods: &[PodSlot<'_>],
    container: &ContainerSlot<'_>,
    key: &ContainerKey<'_>,
) -> std::cmp::Ordering {
    let pod = &pods[container.pod];
    container
        .name
        .as_bytes()
        .cmp(key.container.as_bytes())
        .then_with(|| pod.namespace.as_bytes().cmp(key.namespace.as_bytes()))
        .then_with(|| pod.name.as_bytes().cmp(key.pod.as_bytes()))
}

/// Picks `container`, `pod` and `namespace` out of the label block; each must be present and
/// non-empty (an empty name could never be served). Other labels are ignored; a repeated label keeps
/// its last value.
fn container_key<'a>(sample: &Sample<'a>) -> Result<ContainerKey<'a>, SkipReason> {
    let mut namespace = None;
    let mut pod = None;
    let mut container = None;
    for label in sample.labels.iter() {
        let label = label?;
        let slot = match label.name {
            "container" => &mut container,
            "pod" => &mut pod,
            "namespace" => &mut namespace,
            _ => continue,
        };
        *slot = Some(label.value);
    }
    match (namespace, pod, container) {
        (Some(namespace), Some(pod), Some(container))
            if !namespace.is_empty() && !pod.is_empty() && !container.is_empty() =>
        {
            Ok(ContainerKey {
                namespace,
                pod,
                container,
            })
        }
        _ => Err(SkipReason::MissingLabels),
    }
}

/// Core-seconds to nanocore-seconds, truncated as upstream does. `value` is finite and
/// non-negative; the cast saturates at `u64::MAX` for absurdly large values.
fn cpu_nanos(value: f64) -> u64 {
    (value * NANOS_PER_SECOND) as u64
}

/// Bytes, truncated; the cast saturates like [`cpu_nanos`].
fn memory_bytes(value: f64) -> u64 {
    value as u64
}

/// Float seconds since the epoch to nanoseconds; saturates at `i64::MAX`.
fn seconds_to_nanos(value: f64) -> UnixNanos {
    (value * NANOS_PER_SECOND) as i64
}
