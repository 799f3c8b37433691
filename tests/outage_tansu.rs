//! The real broker cut off for 30 s by a TCP proxy between every client and Tansu (the broker
//! advertises the proxy, so no connection goes around it): see `common::outage`. `#[ignore]`d
//! without a broker; `.ci/run` runs it.

mod common;

use common::proxy::Proxy;
use common::tansu::{free_port, Broker};

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn the_broker_cut_off_for_30_s_is_survived_and_nothing_is_applied_twice() {
    let port = free_port();
    let proxy = Proxy::start(format!("127.0.0.1:{port}"));
    let broker = Broker::start_advertising(port, proxy.port);
    let config = common::fresh_config(proxy.address());
    let kafka = &config.kafka;
    for topic in kafka.output_topics().into_iter().chain(&kafka.input_topics) {
        broker.create_topic(topic);
    }
    let kafka = config.kafka.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(common::outage::survive_an_outage(
        config,
        || proxy.cut(),
        || proxy.restore(),
    ));
    assert!(common::schemas::validate_outputs_of(&proxy.address(), &kafka) > 0);
}
