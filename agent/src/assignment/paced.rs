//! What a run waits on: the plan's thresholds on its shard (a [`ShardThrottle`], PostgreSQL
//! only) and the operators' fleet throttles that select the shard, which the session keeps
//! current in a [`FleetThrottles`] channel; they select by the shard's attributes as its last
//! Hello announced them (labels and reported facts). The fleet throttles come first (read from memory:
//! a held shard is not sampled), then the shard's signals; a fleet throttle's wait does not
//! count toward the plan's longest wait, since it ends when lifted or when it expires.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fleetshift_common::executor::{Busy, Throttle};
use fleetshift_common::proto::v1::FleetThrottle;
use fleetshift_common::selector;
use tokio::sync::watch;

use super::ShardThrottle;

/// The operators' fleet throttles in force, as the agent's session last heard them, and what
/// they select one shard by.
#[derive(Debug)]
pub struct FleetThrottles {
    pub list: watch::Receiver<Arc<[FleetThrottle]>>,
    /// The shard's attributes as announced (see `selector::Announced`); `None` before its
    /// first announcement, when its labels stand in.
    pub attributes: Option<HashMap<String, String>>,
}

/// The signal a fleet throttle's wait is reported under.
const FLEET_SIGNAL: &str = "fleet throttle";

/// One run's throttle.
#[derive(Debug)]
pub struct Paced<'t> {
    shard: Option<&'t ShardThrottle>,
    attributes: HashMap<String, String>,
    fleet: watch::Receiver<Arc<[FleetThrottle]>>,
}

impl<'t> Paced<'t> {
    /// The fleet throttles, for a shard with `labels`.
    pub fn fleet(labels: &BTreeMap<String, String>, fleet: FleetThrottles) -> Self {
        let attributes = fleet.attributes.unwrap_or_else(|| {
            labels
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        });
        Self {
            shard: None,
            attributes,
            fleet: fleet.list,
        }
    }

    /// These and the plan's thresholds on the shard, when it has any.
    pub fn and_shard(self, shard: Option<&'t ShardThrottle>) -> Self {
        Self { shard, ..self }
    }

    /// The fleet throttle holding the shard now, as a signal.
    fn held(&self) -> Option<Busy> {
        let throttles = self.fleet.borrow();
        let throttle = selector::holding(throttles.iter(), &self.attributes, SystemTime::now())?;
        let until = throttle
            .until
            .map(|until| format!(" until {until}"))
            .unwrap_or_default();
        let reason = Some(throttle.reason.as_str())
            .filter(|reason| !reason.is_empty())
            .map(|reason| format!(" ({reason})"))
            .unwrap_or_default();
        Some(Busy {
            signal: FLEET_SIGNAL.to_owned(),
            detail: format!(
                "fleet throttle {} set by {}{reason}{until}",
                throttle.throttle_id, throttle.author
            ),
            bounded: false,
        })
    }
}

impl Throttle for Paced<'_> {
    fn busy(&self) -> Pin<Box<dyn Future<Output = Option<Busy>> + Send + '_>> {
        Box::pin(async move {
            if let Some(held) = self.held() {
                return Some(held);
            }
            match self.shard {
                Some(shard) => shard.busy().await,
                None => None,
            }
        })
    }

    fn max_wait(&self) -> Duration {
        self.shard.map_or(Duration::MAX, Throttle::max_wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(selector: &[(&str, &str)], until: SystemTime) -> FleetThrottle {
        FleetThrottle {
            throttle_id: "t1".to_owned(),
            selector: selector
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            until: Some(until.into()),
            reason: "incident 42".to_owned(),
            author: "alice".to_owned(),
        }
    }

    #[tokio::test]
    async fn a_fleet_throttle_holds_the_shards_it_selects_until_lifted_without_a_bound() {
        let (set, list) = watch::channel(Arc::<[FleetThrottle]>::from([]));
        let fleet = FleetThrottles {
            list,
            attributes: None,
        };
        let paced = Paced::fleet(&[("region".to_owned(), "eu".to_owned())].into(), fleet);
        assert_eq!(paced.busy().await, None);
        assert_eq!(paced.max_wait(), Duration::MAX);
        let later = SystemTime::now() + Duration::from_secs(600);
        set.send_replace(Arc::from([throttle(&[("region", "us")], later)]));
        assert_eq!(paced.busy().await, None);
        set.send_replace(Arc::from([throttle(&[("region", "eu")], later)]));
        let busy = paced.busy().await.expect("held");
        assert_eq!(busy.signal, "fleet throttle");
        assert!(!busy.bounded);
        assert!(
            busy.detail
                .starts_with("fleet throttle t1 set by alice (incident 42) until "),
            "{}",
            busy.detail
        );
        let past = SystemTime::now() - Duration::from_secs(1);
        set.send_replace(Arc::from([throttle(&[("region", "eu")], past)]));
        assert_eq!(
            paced.busy().await,
            None,
            "an expired throttle holds nothing"
        );
    }

    #[tokio::test]
    async fn a_fleet_throttle_selects_by_the_announced_facts() {
        let later = SystemTime::now() + Duration::from_secs(600);
        let by_host = throttle(&[(selector::HOST, "web-1")], later);
        let (_set, list) = watch::channel(Arc::<[FleetThrottle]>::from([by_host]));
        let announced = |hostname: &str| FleetThrottles {
            list: list.clone(),
            attributes: Some([(selector::HOST.to_owned(), hostname.to_owned())].into()),
        };
        let labels = [("region".to_owned(), "eu".to_owned())].into();
        assert!(
            Paced::fleet(&labels, announced("web-1"))
                .busy()
                .await
                .is_some()
        );
        assert_eq!(Paced::fleet(&labels, announced("web-2")).busy().await, None);
    }
}
