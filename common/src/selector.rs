//! Label selectors: the pairs plans, listings and operators' fleet throttles pick shards by.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::proto::v1::FleetThrottle;

/// Whether `labels` match `selector`: every pair must be there (an empty selector matches all).
pub fn selects(selector: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

/// The first of `throttles` that holds a shard with `labels` at `now`: one that selects it and
/// has not expired.
pub fn holding<'t>(
    throttles: impl IntoIterator<Item = &'t FleetThrottle>,
    labels: &HashMap<String, String>,
    now: SystemTime,
) -> Option<&'t FleetThrottle> {
    throttles.into_iter().find(|throttle| {
        let expired = throttle
            .until
            .and_then(|until| SystemTime::try_from(until).ok())
            .is_some_and(|until| until <= now);
        !expired && selects(&throttle.selector, labels)
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn a_selector_needs_every_pair_and_an_empty_one_takes_all() {
        let eu = labels(&[("region", "eu"), ("env", "prod")]);
        assert!(selects(&labels(&[("region", "eu")]), &eu));
        assert!(selects(&HashMap::new(), &eu));
        assert!(!selects(&labels(&[("region", "eu"), ("tier", "a")]), &eu));
        assert!(!selects(&labels(&[("region", "us")]), &eu));
    }

    #[test]
    fn an_expired_throttle_holds_nothing() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let throttle = |id: &str, until: SystemTime| FleetThrottle {
            throttle_id: id.to_owned(),
            selector: labels(&[("region", "eu")]),
            until: Some(until.into()),
            ..FleetThrottle::default()
        };
        let throttles = [
            throttle("expired", now - Duration::from_secs(1)),
            throttle("current", now + Duration::from_secs(60)),
        ];
        let eu = labels(&[("region", "eu")]);
        let held = holding(&throttles, &eu, now).map(|held| held.throttle_id.as_str());
        assert_eq!(held, Some("current"));
        assert_eq!(holding(&throttles[..1], &eu, now), None);
        assert_eq!(holding(&throttles, &labels(&[("region", "us")]), now), None);
    }
}
