//! What the store benches share: the runtime they drive the store on (two
//! workers, as on this project's 2-core machine).

use tokio::runtime::Runtime;

pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
