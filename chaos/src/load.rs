//! A concurrent application on every shard, contending with the migrations for `accounts`:
//! point reads (timed), inserts, and a session that now and then holds a share lock longer
//! than a migration will wait, so migrations taking the table's strongest lock time out and
//! retry while reads queue behind them. The pacing is the application's, not a test's wait.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::checker::latency::Read;

/// The running application; [`Application::stop`] ends it and hands over the reads.
#[derive(Debug)]
pub struct Application {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    reads: Arc<Mutex<Vec<Read>>>,
}

impl Application {
    /// Starts the load on each pool; reads are timed from `epoch`. The lock holder keeps its
    /// share lock for `hold` (longer than the migrations' lock timeout).
    pub fn start(pools: &[PgPool], epoch: Instant, hold: Duration) -> Self {
        let (stop, stopped) = watch::channel(false);
        let reads = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        for pool in pools {
            tasks.spawn(reader(
                pool.clone(),
                epoch,
                Arc::clone(&reads),
                stopped.clone(),
            ));
            tasks.spawn(writer(pool.clone(), stopped.clone()));
            tasks.spawn(holder(pool.clone(), hold, stopped.clone()));
        }
        Self { stop, tasks, reads }
    }

    /// Stops every task and returns the reads timed.
    pub async fn stop(mut self) -> Vec<Read> {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        std::mem::take(
            &mut *self
                .reads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// Runs `step` until told to stop, pausing `pace` between steps (longer after an error: the
/// server may be restarting).
async fn paced<F, Fut>(mut stopped: watch::Receiver<bool>, pace: Duration, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), sqlx::Error>>,
{
    while !*stopped.borrow() {
        let pause = if step().await.is_ok() {
            pace
        } else {
            Duration::from_millis(200)
        };
        tokio::select! {
            _ = stopped.changed() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}

async fn reader(
    pool: PgPool,
    epoch: Instant,
    reads: Arc<Mutex<Vec<Read>>>,
    stopped: watch::Receiver<bool>,
) {
    let mut id: i64 = 0;
    paced(stopped, Duration::from_millis(20), || {
        id = id % 5_000 + 1;
        let pool = pool.clone();
        let reads = Arc::clone(&reads);
        async move {
            // The connection is taken first: only the query is timed.
            let mut connection = pool.acquire().await?;
            let started = Instant::now();
            sqlx::query("SELECT balance FROM accounts WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *connection)
                .await?;
            let read = Read {
                started: started - epoch,
                took: started.elapsed(),
            };
            reads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(read);
            Ok(())
        }
    })
    .await;
}

async fn writer(pool: PgPool, stopped: watch::Receiver<bool>) {
    paced(stopped, Duration::from_millis(50), || {
        let pool = pool.clone();
        async move {
            sqlx::query("INSERT INTO accounts (balance) VALUES (1)")
                .execute(&pool)
                .await
                .map(drop)
        }
    })
    .await;
}

async fn holder(pool: PgPool, hold: Duration, stopped: watch::Receiver<bool>) {
    paced(stopped, Duration::from_millis(1_500), || {
        let pool = pool.clone();
        async move {
            let mut transaction = pool.begin().await?;
            sqlx::query("SELECT count(*) FROM accounts WHERE id < 10")
                .execute(&mut *transaction)
                .await?;
            tokio::time::sleep(hold).await;
            transaction.commit().await
        }
    })
    .await;
}
