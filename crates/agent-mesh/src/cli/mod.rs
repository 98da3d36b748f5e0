//! One module per subcommand of `agent-mesh`.

pub mod bench;
pub mod dp;
pub mod sim;
