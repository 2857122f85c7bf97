//! `keel sim --replay FILE`: a recorded session of real notifications served to
//! subscribers, at the recorded pace or faster.
//!
//! The file holds one frame per line, as the exchange sent it, optionally after
//! a `<timestamp>: ` prefix (cryptofeed's recordings). Lines that are not
//! `subscription` notifications (the recorded subscribe and its answer) are
//! skipped. Each connection that subscribes to a recorded channel (at any
//! interval) gets the recording from the start, frames as recorded, paced by
//! the payloads' `timestamp`s (never backwards: the wire order is kept).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::SimError;
use crate::Channel;

/// One recorded notification.
#[derive(Clone, Debug)]
pub(super) struct Recorded {
    /// The channel it was sent on.
    pub(super) channel: Channel,
    /// When it is due, from the start of the recording.
    pub(super) due: Duration,
    /// The frame as recorded.
    pub(super) text: String,
}

/// A loaded recording.
#[derive(Clone, Debug, Default)]
pub(super) struct Recording {
    pub(super) frames: Vec<Recorded>,
}

impl Recording {
    /// Reads `path`; `speed` divides the recorded gaps (0: no waiting).
    pub(super) fn load(path: &Path, speed: f64) -> Result<Self, SimError> {
        let problem = |line: Option<usize>, reason: String| SimError::Replay {
            path: path.to_owned(),
            line,
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| problem(None, e.to_string()))?;
        let mut frames = Vec::new();
        let mut first_ms: Option<u64> = None;
        let mut latest_ms = 0u64;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            // `1626966071.52: {...}` (cryptofeed) or the bare frame.
            let json = match line.find(": {") {
                Some(at) if !line.starts_with('{') => &line[at + 2..],
                _ => line,
            };
            let frame: Value =
                serde_json::from_str(json).map_err(|e| problem(Some(n + 1), e.to_string()))?;
            if frame.get("method").and_then(Value::as_str) != Some("subscription") {
                continue;
            }
            let params = &frame["params"];
            let Some(name) = params["channel"].as_str() else {
                continue;
            };
            let channel: Channel = name
                .parse()
                .map_err(|e: crate::channel::BadChannel| problem(Some(n + 1), e.to_string()))?;
            let stamp = params["data"]["timestamp"]
                .as_u64()
                .or_else(|| params["data"][0]["timestamp"].as_u64());
            if let Some(ms) = stamp {
                latest_ms = latest_ms.max(ms);
                first_ms.get_or_insert(ms);
            }
            let offset = latest_ms.saturating_sub(first_ms.unwrap_or(latest_ms));
            let due = if speed > 0.0 {
                Duration::from_secs_f64(offset as f64 / 1000.0 / speed)
            } else {
                Duration::ZERO
            };
            frames.push(Recorded {
                channel,
                due,
                text: json.to_owned(),
            });
        }
        if frames.is_empty() {
            return Err(problem(None, "no subscription notifications in it".into()));
        }
        Ok(Self { frames })
    }

    /// The instruments the recording is about, in order of appearance.
    pub(super) fn instruments(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for frame in &self.frames {
            let name = frame.channel.instrument();
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
        names
    }
}

/// Whether a subscription to `sub` receives recorded frames of `recorded`:
/// the same kind of channel on the same instrument, at any interval.
pub(super) fn serves(sub: &Channel, recorded: &Channel) -> bool {
    std::mem::discriminant(sub) == std::mem::discriminant(recorded)
        && sub.instrument() == recorded.instrument()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cryptofeed_session_loads_paced_by_its_timestamps() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/deribit-frames/cryptofeed");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("ws-"))
            .collect();
        names.sort();
        let lines: Vec<String> = names
            .iter()
            .map(|p| {
                format!(
                    "1626966071.0: {}",
                    std::fs::read_to_string(p).unwrap().trim()
                )
            })
            .collect();
        let file = std::env::temp_dir().join(format!("keel-replay-{}.jsonl", std::process::id()));
        std::fs::write(&file, lines.join("\n")).unwrap();
        let recording = Recording::load(&file, 1.0).unwrap();
        assert_eq!(
            recording.frames.len(),
            135,
            "the subscribe and its answer skipped"
        );
        assert_eq!(recording.instruments().len(), 10);
        let dues: Vec<Duration> = recording.frames.iter().map(|f| f.due).collect();
        assert!(dues.windows(2).all(|w| w[0] <= w[1]), "never backwards");
        assert!(
            dues[dues.len() - 1] > Duration::from_secs(30),
            "{:?}",
            dues.last()
        );
        let fast = Recording::load(&file, 0.0).unwrap();
        assert!(fast.frames.iter().all(|f| f.due == Duration::ZERO));
        std::fs::remove_file(&file).unwrap();
    }
}
