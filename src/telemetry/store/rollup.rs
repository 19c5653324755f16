//! Rollups as data arrives: the 1m/5m/1h buckets of the samples a batch *newly* stored,
//! folded in memory (min, max, sum, count, last), to be merged into the stored buckets.
//!
//! Why merging is exact and idempotent: min, max, count and "last by time" of a union are the
//! same functions of its parts, and only samples the insert actually added are folded (a
//! replayed batch adds none, so it merges nothing). Sums are added in another order than a
//! rebuild adds them, which can move a non-integer sum by a rounding step; nothing else
//! differs. Each bucket is built straight from samples at every resolution, so no coarse
//! bucket depends on a finer row being written first.

use std::collections::BTreeMap;

use super::RESOLUTIONS;

/// One bucket of one series at one resolution, as folded from samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agg {
    pub series_id: i64,
    pub resolution_ms: i64,
    pub bucket_ms: i64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: i64,
    pub last_ts: i64,
    pub last: f64,
}

impl Agg {
    fn of(series_id: i64, resolution_ms: i64, ts: i64, v: f64) -> Self {
        Self {
            series_id,
            resolution_ms,
            bucket_ms: ts - ts.rem_euclid(resolution_ms),
            min: v,
            max: v,
            sum: v,
            count: 1,
            last_ts: ts,
            last: v,
        }
    }

    fn add(&mut self, ts: i64, v: f64) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v;
        self.count += 1;
        if ts > self.last_ts {
            (self.last_ts, self.last) = (ts, v);
        }
    }
}

/// The buckets of `samples` (series id, unix ms, value) at every resolution, ordered by
/// (series, resolution, bucket): writers that merge them in this order take row locks in
/// one order, so two of them never deadlock.
pub fn fold(samples: &[(i64, i64, f64)]) -> Vec<Agg> {
    let mut map: BTreeMap<(i64, i64, i64), Agg> = BTreeMap::new();
    for &(id, ts, v) in samples {
        for res in RESOLUTIONS {
            let a = Agg::of(id, res, ts, v);
            map.entry((id, res, a.bucket_ms))
                .and_modify(|x| x.add(ts, v))
                .or_insert(a);
        }
    }
    map.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_every_resolution() {
        // Two minutes of one series, given out of time order.
        let s = [
            (7, 61_000, 5.0),
            (7, 0, 1.0),
            (7, 59_000, 3.0),
            (7, 30_000, -2.0),
        ];
        let a = fold(&s);
        let at = |res, b| {
            *a.iter()
                .find(|x| x.resolution_ms == res && x.bucket_ms == b)
                .unwrap()
        };
        let m0 = at(60_000, 0);
        assert_eq!((m0.min, m0.max, m0.sum, m0.count), (-2.0, 3.0, 2.0, 3));
        assert_eq!((m0.last_ts, m0.last), (59_000, 3.0));
        let m1 = at(60_000, 60_000);
        assert_eq!((m1.count, m1.last), (1, 5.0));
        let h = at(3_600_000, 0);
        assert_eq!(
            (h.min, h.max, h.sum, h.count, h.last),
            (-2.0, 5.0, 7.0, 4, 5.0)
        );
        assert_eq!(a.len(), 4, "two minutes, one 5m and one 1h bucket");
    }

    #[test]
    fn orders_by_key_and_handles_negative_times() {
        let a = fold(&[(2, -1, 1.0), (1, 5, 2.0)]);
        let keys: Vec<_> = a
            .iter()
            .map(|x| (x.series_id, x.resolution_ms, x.bucket_ms))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert!(a.iter().any(|x| x.series_id == 2 && x.bucket_ms == -60_000));
    }

    #[test]
    fn nothing_in_nothing_out() {
        assert!(fold(&[]).is_empty());
    }
}
