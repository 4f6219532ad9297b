//! Generated etcd v3 wire types and service traits (from `proto/`).

#![allow(clippy::all, missing_docs)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

pub use etcdserverpb::*;
pub use mvccpb::{Event, KeyValue};
