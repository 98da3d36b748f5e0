//! One module per subcommand of `agent-mesh`.

pub mod admin;
pub mod api_client;
pub mod bench;
pub mod bench_cache;
pub mod bench_chaos;
pub mod bench_consensus;
pub mod bench_net;
pub mod bench_round;
pub mod bench_scale;
pub mod ca;
pub mod dp;
pub mod health;
pub mod job;
pub mod keygen;
pub mod learner;
pub mod netns;
pub mod node;
pub mod plot;
pub mod provision;
pub mod robustness;
pub mod sim;
pub mod sim_mesh;
pub mod status;
pub mod token;
pub mod weights;
