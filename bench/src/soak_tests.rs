//! Row s's pure logic: the RSS baseline, growth, the pass criteria, the queue gauges.

use super::*;

fn at(completed: usize, rss: &[(&str, f64)]) -> Sample {
    Sample {
        completed,
        rss_mib: rss.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect(),
        ..Sample::default()
    }
}

#[test]
fn growth_is_from_the_first_sample_after_the_warm_up_to_the_last() {
    let samples = [
        at(0, &[("gateway", 10.0), ("nats", 50.0)]),
        at(100, &[("gateway", 20.0), ("nats", 60.0)]),
        at(500, &[("gateway", 30.0), ("nats", 55.0)]),
        at(1000, &[("gateway", 21.0), ("nats", 66.0)]),
    ];
    let table = rss_table(&samples, warmup_end(&samples, 100, 60.0, 0.0));
    let gateway = &table[0];
    assert_eq!(gateway.name, "gateway");
    assert_eq!(
        (gateway.after_warmup_mib, gateway.end_mib),
        (Some(20.0), Some(21.0))
    );
    assert_eq!((gateway.peak_mib, gateway.growth), (30.0, Some(0.05)));
    assert_eq!(table[1].growth, Some(0.1));
    // A warm-up that never ended, and a process gone by the end, have no growth.
    assert!(
        rss_table(&samples, warmup_end(&samples, 5000, 60.0, 0.0))
            .iter()
            .all(|p| p.growth.is_none())
    );
    let gone = [at(200, &[("gateway", 20.0)]), at(300, &[])];
    assert_eq!(rss_table(&gone, Some(0))[0].end_mib, None);
    // The time bound ends the warm-up too.
    let timed = [
        Sample {
            t_secs: 5.0,
            ..at(10, &[])
        },
        Sample {
            t_secs: 20.0,
            ..at(20, &[])
        },
    ];
    assert_eq!(warmup_end(&timed, 1000, 15.0, 0.0), Some(1));
    assert_eq!(warmup_end(&timed, 10, 15.0, 0.0), Some(0));
    assert_eq!(warmup_end(&timed, 1000, 60.0, 0.0), None);
    // Not before the settling time, unless the soak ends first.
    assert_eq!(warmup_end(&timed, 10, 15.0, 10.0), Some(1));
    assert_eq!(warmup_end(&timed, 10, 15.0, 90.0), Some(0));
}

#[test]
fn a_soak_passes_on_small_growth_no_failure_and_a_drained_queue() {
    let samples = [
        at(100, &[("gateway", 20.0), ("nats", 60.0)]),
        at(1000, &[("gateway", 21.0), ("nats", 65.9)]),
    ];
    let good = Soak {
        completed: 1000,
        drained: true,
        processes: rss_table(&samples, warmup_end(&samples, 100, 60.0, 0.0)),
        ..Soak::default()
    };
    assert!(good.passed());
    assert_eq!(good.worst_growth().map(|(_, n)| n), Some("nats"));
    assert!(
        !Soak {
            failures: 1,
            ..good.clone()
        }
        .passed()
    );
    assert!(
        !Soak {
            drained: false,
            ..good.clone()
        }
        .passed()
    );
    assert!(
        !Soak {
            completed: 0,
            ..good.clone()
        }
        .passed()
    );
    let grown = [
        samples[0].clone(),
        at(1000, &[("gateway", 22.0), ("nats", 60.0)]),
    ];
    let grew = Soak {
        processes: rss_table(&grown, Some(0)),
        ..good.clone()
    };
    assert!(!grew.passed(), "10 % is not less than 10 %");
    let gone = [samples[0].clone(), at(1000, &[("nats", 60.0)])];
    assert!(
        !Soak {
            processes: rss_table(&gone, Some(0)),
            ..good
        }
        .passed()
    );
}

#[test]
fn gauges_are_read_by_their_exact_name() {
    let text = "# TYPE tandem_queue_messages gauge\ntandem_queue_messages 0\n\
                tandem_queue_consumer_pending 12\ntandem_queue_consumer_pending_x 1\n";
    assert_eq!(gauge(text, "tandem_queue_messages"), Some(0.0));
    assert_eq!(gauge(text, "tandem_queue_consumer_pending"), Some(12.0));
    assert_eq!(gauge(text, "tandem_queue_consumer_ack_pending"), None);
}
