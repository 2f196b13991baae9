//! The usage book: totals since start, per model, per key, per hour and per client address,
//! every map bounded (a model or key past the cap counts under `other`; client addresses are
//! an LRU of `max_clients` entries whose evicted counts stay in the totals).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Request times kept for `current_rpm` (the reference's last 1000).
const RECENT_REQUESTS: usize = 1000;
/// Models counted by name since start; more count as `other`.
const MAX_MODELS: usize = 256;
/// Keys counted by label since start; more count as `other`.
const MAX_KEYS: usize = 1024;
/// Names per hour bucket (models, keys); more count as `other`.
const MAX_NAMES_PER_HOUR: usize = 64;
/// Hours kept in memory and on disk (7 days).
pub const HISTORY_HOURS: u64 = 168;
/// Request times kept per client for its `rpm` (the reference's 100).
const CLIENT_RECENT: usize = 100;
/// Models per client.
const CLIENT_MODELS: usize = 32;
/// User agents per client (the reference's 50), each cut to 200 characters.
const CLIENT_USER_AGENTS: usize = 50;
const USER_AGENT_CHARS: usize = 200;
/// The name under which whatever is past a cap is counted.
pub const OTHER: &str = "other";

/// One finished API request.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// Unix milliseconds at the end of the request.
    pub at_ms: u64,
    pub model: Option<Arc<str>>,
    /// The label of the key the request came with (`None`: no valid key).
    pub key: Option<Arc<str>>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub success: bool,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub images: u64,
    pub videos: u64,
}

/// Counters of a set of requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub requests: u64,
    pub success: u64,
    pub failed: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default)]
    pub images: u64,
    #[serde(default)]
    pub videos: u64,
}

impl Counts {
    fn add(&mut self, e: &Entry) {
        self.requests += 1;
        if e.success {
            self.success += 1;
        } else {
            self.failed += 1;
        }
        self.input_tokens += e.input_tokens;
        self.output_tokens += e.output_tokens;
        self.images += e.images;
        self.videos += e.videos;
    }

    fn merge(&mut self, o: &Counts) {
        self.requests += o.requests;
        self.success += o.success;
        self.failed += o.failed;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.images += o.images;
        self.videos += o.videos;
    }

    fn json(&self) -> Value {
        json!({
            "requests": self.requests,
            "success": self.success,
            "failed": self.failed,
            "success_rate": rate(self.success, self.requests, 1),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "images": self.images,
            "videos": self.videos,
        })
    }
}

/// `NN.N%` (the reference's string), `decimals` after the point.
pub fn rate(ok: u64, total: u64, decimals: usize) -> String {
    if total == 0 {
        return format!("{:.*}%", decimals, 0.0);
    }
    #[allow(clippy::cast_precision_loss)]
    let pct = ok as f64 * 100.0 / total as f64;
    format!("{pct:.decimals$}%")
}

/// One hour of usage, as stored in redb (`usage_hourly`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hour {
    #[serde(flatten)]
    pub counts: Counts,
    #[serde(default)]
    pub models: BTreeMap<String, u64>,
    #[serde(default)]
    pub keys: BTreeMap<String, u64>,
}

fn bump(map: &mut BTreeMap<String, u64>, name: &str) {
    if let Some(n) = map.get_mut(name) {
        *n += 1;
    } else if map.len() < MAX_NAMES_PER_HOUR {
        map.insert(name.to_owned(), 1);
    } else {
        *map.entry(OTHER.to_owned()).or_default() += 1;
    }
}

fn counts_of<'a>(
    map: &'a mut HashMap<Arc<str>, Counts>,
    name: &Arc<str>,
    cap: usize,
) -> &'a mut Counts {
    if !map.contains_key(name) && map.len() >= cap {
        return map.entry(Arc::from(OTHER)).or_default();
    }
    map.entry(Arc::clone(name)).or_default()
}

/// What is known of one client address.
#[derive(Debug)]
struct Client {
    counts: Counts,
    first_seen_ms: u64,
    last_seen_ms: u64,
    recent: VecDeque<u64>,
    models: HashMap<Arc<str>, u64>,
    user_agents: HashMap<String, u64>,
    seq: u64,
}

/// Client addresses, least recently seen evicted first.
#[derive(Debug)]
struct Clients {
    cap: usize,
    map: HashMap<IpAddr, Client>,
    /// Recency order: sequence number → address.
    order: BTreeMap<u64, IpAddr>,
    seq: u64,
    evicted: u64,
}

impl Clients {
    fn record(&mut self, ip: IpAddr, e: &Entry) {
        self.seq += 1;
        let seq = self.seq;
        if !self.map.contains_key(&ip) {
            while self.map.len() >= self.cap.max(1) {
                let Some((_, oldest)) = self.order.pop_first() else {
                    break;
                };
                self.map.remove(&oldest);
                self.evicted += 1;
            }
            self.map.insert(
                ip,
                Client {
                    counts: Counts::default(),
                    first_seen_ms: e.at_ms,
                    last_seen_ms: e.at_ms,
                    recent: VecDeque::new(),
                    models: HashMap::new(),
                    user_agents: HashMap::new(),
                    seq,
                },
            );
        }
        let Some(client) = self.map.get_mut(&ip) else {
            return;
        };
        self.order.remove(&client.seq);
        self.order.insert(seq, ip);
        client.seq = seq;
        client.counts.add(e);
        client.last_seen_ms = e.at_ms;
        if client.recent.len() == CLIENT_RECENT {
            client.recent.pop_front();
        }
        client.recent.push_back(e.at_ms);
        if let Some(model) = &e.model {
            if let Some(n) = client.models.get_mut(model) {
                *n += 1;
            } else if client.models.len() < CLIENT_MODELS {
                client.models.insert(Arc::clone(model), 1);
            }
        }
        if let Some(ua) = &e.user_agent {
            let ua: String = ua.chars().take(USER_AGENT_CHARS).collect();
            if let Some(n) = client.user_agents.get_mut(&ua) {
                *n += 1;
            } else if client.user_agents.len() < CLIENT_USER_AGENTS {
                client.user_agents.insert(ua, 1);
            }
        }
    }
}

#[derive(Debug)]
struct Inner {
    totals: Counts,
    recent: VecDeque<u64>,
    models: HashMap<Arc<str>, Counts>,
    keys: HashMap<Arc<str>, Counts>,
    hours: BTreeMap<u64, Hour>,
    dirty_hours: BTreeSet<u64>,
    clients: Clients,
}

/// The usage book of one gateway.
#[derive(Debug)]
pub struct Book {
    inner: Mutex<Inner>,
    started_ms: u64,
}

fn rfc3339(ms: u64) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Requests per minute over the last minute of `times` (unix ms, oldest first).
fn rpm(times: &VecDeque<u64>, now_ms: u64) -> u64 {
    let since = now_ms.saturating_sub(60_000);
    times.iter().rev().take_while(|t| **t >= since).count() as u64
}

/// `1h2m3s`, as Go prints a duration rounded to seconds.
pub fn go_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

impl Book {
    /// A book that remembers at most `max_clients` client addresses, starting from the stored
    /// `hours` (hour start in unix seconds → bucket).
    pub fn new(max_clients: usize, started_ms: u64, hours: BTreeMap<u64, Hour>) -> Book {
        Book {
            inner: Mutex::new(Inner {
                totals: Counts::default(),
                recent: VecDeque::with_capacity(RECENT_REQUESTS),
                models: HashMap::new(),
                keys: HashMap::new(),
                hours,
                dirty_hours: BTreeSet::new(),
                clients: Clients {
                    cap: max_clients,
                    map: HashMap::new(),
                    order: BTreeMap::new(),
                    seq: 0,
                    evicted: 0,
                },
            }),
            started_ms,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the counters half-updated in a way that
        // matters more than losing them: keep serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one finished request.
    pub fn record(&self, e: &Entry) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.totals.add(e);
        if inner.recent.len() == RECENT_REQUESTS {
            inner.recent.pop_front();
        }
        inner.recent.push_back(e.at_ms);
        if let Some(model) = &e.model {
            counts_of(&mut inner.models, model, MAX_MODELS).add(e);
        }
        if let Some(key) = &e.key {
            counts_of(&mut inner.keys, key, MAX_KEYS).add(e);
        }
        let hour_start = e.at_ms / 1000 / 3600 * 3600;
        let hour = inner.hours.entry(hour_start).or_default();
        hour.counts.add(e);
        if let Some(model) = &e.model {
            bump(&mut hour.models, model);
        }
        if let Some(key) = &e.key {
            bump(&mut hour.keys, key);
        }
        inner.dirty_hours.insert(hour_start);
        let oldest = hour_start.saturating_sub(HISTORY_HOURS * 3600);
        while inner
            .hours
            .first_key_value()
            .is_some_and(|(h, _)| *h < oldest)
        {
            inner.hours.pop_first();
        }
        if let Some(ip) = e.ip {
            inner.clients.record(ip, e);
        }
    }

    /// The hours changed since the last call (for the flusher), with the cut-off below which
    /// stored hours are pruned.
    pub fn take_dirty_hours(&self) -> (Vec<(u64, Hour)>, u64) {
        let mut inner = self.lock();
        let dirty = std::mem::take(&mut inner.dirty_hours);
        let hours = dirty
            .into_iter()
            .filter_map(|h| inner.hours.get(&h).map(|b| (h, b.clone())))
            .collect();
        let newest = inner.hours.last_key_value().map_or(0, |(h, _)| *h);
        (hours, newest.saturating_sub(HISTORY_HOURS * 3600))
    }

    /// Puts hours back after a failed write, so the next flush retries them.
    pub fn mark_dirty(&self, hours: impl IntoIterator<Item = u64>) {
        self.lock().dirty_hours.extend(hours);
    }

    /// How many client addresses are remembered now, and the cap.
    pub fn clients_tracked(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.clients.map.len(), inner.clients.cap)
    }

    /// The fields of `GET /admin/stats` kept here (the reference's names, plus `keys`,
    /// `failed` per hour and hourly `models`/`keys`).
    pub fn stats_json(&self, now_ms: u64) -> Value {
        let inner = self.lock();
        let t = &inner.totals;
        let uptime_s = now_ms.saturating_sub(self.started_ms) / 1000;
        #[allow(clippy::cast_precision_loss)]
        // Over the first minute the average is the count so far (no rate above what happened).
        let average_rpm = if uptime_s == 0 {
            0.0
        } else {
            t.requests as f64 * 60.0 / uptime_s.max(60) as f64
        };
        let models: serde_json::Map<String, Value> = inner
            .models
            .iter()
            .map(|(name, c)| {
                let mut v = c.json();
                v["success_rate"] = json!(rate(c.success, c.requests, 1));
                (name.to_string(), v)
            })
            .collect();
        let keys: serde_json::Map<String, Value> = inner
            .keys
            .iter()
            .map(|(name, c)| (name.to_string(), c.json()))
            .collect();
        let hourly: Vec<Value> = inner
            .hours
            .iter()
            .filter(|(_, h)| h.counts.requests > 0)
            .map(|(start, h)| {
                json!({
                    "hour": rfc3339(start * 1000),
                    "requests": h.counts.requests,
                    "success": h.counts.success,
                    "failed": h.counts.failed,
                    "input_tokens": h.counts.input_tokens,
                    "output_tokens": h.counts.output_tokens,
                    "images": h.counts.images,
                    "videos": h.counts.videos,
                    "models": h.models,
                    "keys": h.keys,
                })
            })
            .collect();
        json!({
            "uptime": go_duration(uptime_s),
            "uptime_seconds": uptime_s,
            "total_requests": t.requests,
            "success_requests": t.success,
            "failed_requests": t.failed,
            "success_rate": rate(t.success, t.requests, 2),
            "input_tokens": t.input_tokens,
            "output_tokens": t.output_tokens,
            "total_tokens": t.input_tokens + t.output_tokens,
            "images_generated": t.images,
            "videos_generated": t.videos,
            "current_rpm": rpm(&inner.recent, now_ms) as f64,
            "average_rpm": format!("{average_rpm:.2}"),
            "models": models,
            "keys": keys,
            "hourly": hourly,
        })
    }

    /// `GET /admin/ip`: the clients with the most requests first, at most `limit` of them.
    pub fn clients_json(&self, now_ms: u64, limit: usize) -> Value {
        let inner = self.lock();
        let clients = &inner.clients;
        let mut all: Vec<(&IpAddr, &Client)> = clients.map.iter().collect();
        all.sort_by(|a, b| {
            b.1.counts
                .requests
                .cmp(&a.1.counts.requests)
                .then(b.1.last_seen_ms.cmp(&a.1.last_seen_ms))
        });
        let ips: Vec<Value> = all
            .iter()
            .take(limit)
            .map(|(ip, c)| {
                let models: BTreeMap<&str, u64> =
                    c.models.iter().map(|(k, v)| (k.as_ref(), *v)).collect();
                let uas: BTreeMap<&str, u64> = c
                    .user_agents
                    .iter()
                    .map(|(k, v)| (k.as_str(), *v))
                    .collect();
                json!({
                    "ip": ip.to_string(),
                    "total_count": c.counts.requests,
                    "success_count": c.counts.success,
                    "failed_count": c.counts.failed,
                    "success_rate": rate(c.counts.success, c.counts.requests, 1),
                    "input_tokens": c.counts.input_tokens,
                    "output_tokens": c.counts.output_tokens,
                    "total_tokens": c.counts.input_tokens + c.counts.output_tokens,
                    "images": c.counts.images,
                    "videos": c.counts.videos,
                    "rpm": rpm(&c.recent, now_ms),
                    "first_seen": rfc3339(c.first_seen_ms),
                    "last_seen": rfc3339(c.last_seen_ms),
                    "models": models,
                    "user_agents": uas,
                })
            })
            .collect();
        let t = &inner.totals;
        json!({
            "server_time": rfc3339(now_ms),
            "unique_ips": clients.map.len(),
            "tracked_limit": clients.cap,
            "evicted_ips": clients.evicted,
            "total_requests": t.requests,
            "total_success": t.success,
            "total_failed": t.failed,
            "total_input_tokens": t.input_tokens,
            "total_output_tokens": t.output_tokens,
            "total_tokens": t.input_tokens + t.output_tokens,
            "total_images": t.images,
            "total_videos": t.videos,
            "ips": ips,
        })
    }

    /// Totals since start (tests and `/admin/status`).
    pub fn totals(&self) -> Counts {
        self.lock().totals.clone()
    }

    /// Adds the counts of stored hours into one (for tests of the history).
    pub fn history_total(&self) -> Counts {
        let inner = self.lock();
        let mut sum = Counts::default();
        for h in inner.hours.values() {
            sum.merge(&h.counts);
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ip: &str, at_ms: u64, ok: bool) -> Entry {
        Entry {
            at_ms,
            model: Some(Arc::from("gemini-2.5-flash")),
            key: Some(Arc::from("team-a")),
            ip: Some(ip.parse().unwrap()),
            user_agent: Some("sdk/1".into()),
            success: ok,
            input_tokens: 3,
            output_tokens: 5,
            images: 0,
            videos: 0,
        }
    }

    #[test]
    fn clients_are_bounded_and_the_least_recent_goes_first() {
        let book = Book::new(3, 0, BTreeMap::new());
        for (i, ip) in ["1.0.0.1", "1.0.0.2", "1.0.0.3"].iter().enumerate() {
            book.record(&entry(ip, 1000 + i as u64, true));
        }
        // 1.0.0.1 is seen again, so 1.0.0.2 is the least recent when a fourth arrives.
        book.record(&entry("1.0.0.1", 2000, false));
        book.record(&entry("1.0.0.4", 3000, true));
        let v = book.clients_json(3000, 10);
        let ips: Vec<&str> = v["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["ip"].as_str().unwrap())
            .collect();
        assert_eq!(ips.len(), 3);
        assert!(!ips.contains(&"1.0.0.2"), "{ips:?}");
        assert_eq!(ips[0], "1.0.0.1");
        assert_eq!(v["ips"][0]["total_count"], 2);
        assert_eq!(v["ips"][0]["failed_count"], 1);
        assert_eq!(v["evicted_ips"], 1);
        // Totals keep the evicted client's requests.
        assert_eq!(v["total_requests"], 5);
        for i in 0..10_000u32 {
            book.record(&entry(&std::net::Ipv4Addr::from(i).to_string(), 4000, true));
        }
        assert_eq!(book.clients_tracked(), (3, 3));
    }

    #[test]
    fn models_and_keys_past_their_caps_count_as_other() {
        let book = Book::new(10, 0, BTreeMap::new());
        for i in 0..(MAX_MODELS + 5) {
            let mut e = entry("1.1.1.1", 1000, true);
            e.model = Some(Arc::from(format!("m{i}").as_str()));
            book.record(&e);
        }
        let v = book.stats_json(2000);
        let models = v["models"].as_object().unwrap();
        assert_eq!(models.len(), MAX_MODELS + 1);
        assert_eq!(models[OTHER]["requests"], 5);
        let hour = &v["hourly"][0]["models"];
        assert_eq!(hour.as_object().unwrap().len(), MAX_NAMES_PER_HOUR + 1);
        assert_eq!(hour[OTHER], (MAX_MODELS + 5 - MAX_NAMES_PER_HOUR) as u64);
    }

    #[test]
    fn hours_are_kept_for_a_week_and_flushed_once() {
        let book = Book::new(10, 0, BTreeMap::new());
        book.record(&entry("1.1.1.1", 3_600_000, true));
        book.record(&entry("1.1.1.1", 3_600_500, false));
        let (dirty, _) = book.take_dirty_hours();
        assert_eq!(dirty.len(), 1);
        assert_eq!(dirty[0].0, 3600);
        assert_eq!(dirty[0].1.counts.requests, 2);
        assert_eq!(dirty[0].1.counts.failed, 1);
        assert!(book.take_dirty_hours().0.is_empty());
        let later = (HISTORY_HOURS + 2) * 3_600_000;
        book.record(&entry("1.1.1.1", later, true));
        let v = book.stats_json(later);
        assert_eq!(v["hourly"].as_array().unwrap().len(), 1);
        assert_eq!(v["total_requests"], 3);
        assert_eq!(v["success_rate"], "66.67%");
    }

    #[test]
    fn reference_formats() {
        assert_eq!(go_duration(3723), "1h2m3s");
        assert_eq!(go_duration(61), "1m1s");
        assert_eq!(go_duration(5), "5s");
        assert_eq!(rate(1, 3, 1), "33.3%");
        assert_eq!(rate(0, 0, 2), "0.00%");
    }
}
