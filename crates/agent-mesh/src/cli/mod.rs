//! One module per subcommand of `agent-mesh`.

pub mod bench;
pub mod bench_net;
pub mod ca;
pub mod dp;
pub mod keygen;
pub mod plot;
pub mod robustness;
pub mod sim;
