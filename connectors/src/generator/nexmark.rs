//! The Nexmark event generator, as specified in the project's `shared/nexmark/GENERATOR.md`:
//! Beam's algorithm with one `java.util.Random` seeded per event id, base time
//! 2015-07-15T00:00:00Z, 10 000 events/s of event time, one timeline, plus the Flink benchmark's
//! `channel`/`url` bid fields from tables seeded with `Random(-1)`.
//!
//! Every event is a pure function of its event number, so generation can start anywhere.
//! Checked against the golden samples (`first1000_*.jsonl` and the hash of the first 100 000
//! events) in this crate's tests.

use std::io::Write;
use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, RecordBatch, StringBuilder, StructArray,
    TimestampMillisecondBuilder,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use super::java_random::JavaRandom;
use crate::codec::text::write_json_string;

const PERSON_PROPORTION: i64 = 1;
const AUCTION_PROPORTION: i64 = 3;
const BID_PROPORTION: i64 = 46;
const TOTAL_PROPORTION: i64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;
const FIRST_PERSON_ID: i64 = 1000;
const FIRST_AUCTION_ID: i64 = 1000;
const FIRST_CATEGORY_ID: i64 = 10;
const NUM_CATEGORIES: i32 = 5;
const PERSON_ID_LEAD: i64 = 10;
const AUCTION_ID_LEAD: i64 = 10;
const HOT_SELLER_RATIO: i64 = 100;
const HOT_AUCTION_RATIO: i64 = 100;
const HOT_BIDDER_RATIO: i64 = 100;
const HOT_AUCTIONS_PROBABILITY_RATIO: i32 = 2;
const HOT_BIDDERS_PROBABILITY_RATIO: i32 = 4;
const HOT_SELLERS_PROBABILITY_RATIO: i32 = 4;
const NUM_IN_FLIGHT_AUCTIONS: i64 = 100;
const NUM_ACTIVE_PEOPLE: i64 = 1000;
const AVG_PERSON_BYTE_SIZE: i64 = 200;
const AVG_AUCTION_BYTE_SIZE: i64 = 500;
const AVG_BID_BYTE_SIZE: i64 = 100;
const CHANNELS_NUMBER: i32 = 10_000;
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];

/// 2015-07-15T00:00:00Z in milliseconds.
pub const BASE_TIME_MS: i64 = 1_436_918_400_000;

/// Generator settings (see GENERATOR.md §2 and §11).
#[derive(Debug, Clone, Copy)]
pub struct NexmarkConfig {
    /// Event-time rate in events per second (drives timestamps, not real speed).
    pub events_per_second: u64,
    /// Event time of event number 0, in ms since the epoch.
    pub base_time_ms: i64,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        Self {
            events_per_second: 10_000,
            base_time_ms: BASE_TIME_MS,
        }
    }
}

impl NexmarkConfig {
    fn inter_event_delay_us(&self) -> i64 {
        let rate = self.events_per_second.max(1) as i64;
        (1_000_000 + rate / 2) / rate
    }

    /// Event time of event number `n`.
    pub fn timestamp_ms(&self, n: i64) -> i64 {
        self.base_time_ms + (n * self.inter_event_delay_us()) / 1000
    }
}

/// A person registering.
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    pub id: i64,
    pub name: String,
    pub email_address: String,
    pub credit_card: String,
    pub city: &'static str,
    pub state: &'static str,
    pub date_time: i64,
    pub extra: String,
}

/// An item put up for auction.
#[derive(Debug, Clone, PartialEq)]
pub struct Auction {
    pub id: i64,
    pub item_name: String,
    pub description: String,
    pub initial_bid: i64,
    pub reserve: i64,
    pub date_time: i64,
    pub expires: i64,
    pub seller: i64,
    pub category: i64,
    pub extra: String,
}

/// A bid on an auction.
#[derive(Debug, Clone, PartialEq)]
pub struct Bid {
    pub auction: i64,
    pub bidder: i64,
    pub price: i64,
    pub channel: &'static str,
    pub url: &'static str,
    pub date_time: i64,
    pub extra: String,
}

/// One Nexmark event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Person(Person),
    Auction(Auction),
    Bid(Bid),
}

impl Event {
    /// 0 = person, 1 = auction, 2 = bid.
    pub fn event_type(&self) -> i32 {
        match self {
            Event::Person(_) => 0,
            Event::Auction(_) => 1,
            Event::Bid(_) => 2,
        }
    }

    /// The event's time in ms since the epoch.
    pub fn date_time(&self) -> i64 {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }
}

fn last_base0_person_id(event_id: i64) -> i64 {
    let epoch = event_id / TOTAL_PROPORTION;
    let mut offset = event_id % TOTAL_PROPORTION;
    if offset >= PERSON_PROPORTION {
        offset = PERSON_PROPORTION - 1;
    }
    epoch * PERSON_PROPORTION + offset
}

fn last_base0_auction_id(event_id: i64) -> i64 {
    let mut epoch = event_id / TOTAL_PROPORTION;
    let mut offset = event_id % TOTAL_PROPORTION;
    if offset < PERSON_PROPORTION {
        epoch -= 1;
        offset = AUCTION_PROPORTION - 1;
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        offset = AUCTION_PROPORTION - 1;
    } else {
        offset -= PERSON_PROPORTION;
    }
    epoch * AUCTION_PROPORTION + offset
}

fn next_long(rng: &mut JavaRandom, n: i64) -> i64 {
    if n < i32::MAX as i64 {
        rng.next_int_bounded(n as i32) as i64
    } else {
        (rng.next_long() % n).abs()
    }
}

fn next_base0_person_id(event_id: i64, rng: &mut JavaRandom) -> i64 {
    let num_people = last_base0_person_id(event_id) + 1;
    let active_people = num_people.min(NUM_ACTIVE_PEOPLE);
    let n = next_long(rng, active_people + PERSON_ID_LEAD);
    num_people - active_people + n
}

fn next_base0_auction_id(event_id: i64, rng: &mut JavaRandom) -> i64 {
    let max_auction = last_base0_auction_id(event_id);
    let min_auction = (max_auction - NUM_IN_FLIGHT_AUCTIONS).max(0);
    min_auction + next_long(rng, max_auction - min_auction + 1 + AUCTION_ID_LEAD)
}

fn next_string(rng: &mut JavaRandom, max_length: i32, special: u8) -> String {
    let len = 3 + rng.next_int_bounded(max_length - 3);
    let mut s = String::with_capacity(len as usize);
    for _ in 0..len {
        if rng.next_int_bounded(13) == 0 {
            s.push(special as char);
        } else {
            s.push((b'a' + rng.next_int_bounded(26) as u8) as char);
        }
    }
    s.trim_matches(' ').to_string()
}

fn next_exact_string(rng: &mut JavaRandom, length: i64) -> String {
    let mut s = String::with_capacity(length.max(0) as usize);
    let mut rnd: i32 = 0;
    let mut n = 0;
    for _ in 0..length {
        if n == 0 {
            rnd = rng.next_int();
            n = 6;
        }
        s.push((b'a' as i32 + rnd % 26) as u8 as char);
        rnd /= 26;
        n -= 1;
    }
    s
}

fn java_round(x: f64) -> i64 {
    (x + 0.5).floor() as i64
}

fn next_extra(rng: &mut JavaRandom, current_size: i64, desired_average_size: i64) -> String {
    if current_size > desired_average_size {
        return String::new();
    }
    let d = desired_average_size - current_size;
    let delta = java_round(d as f64 * 0.2);
    let size = (d - delta)
        + if delta == 0 {
            0
        } else {
            rng.next_int_bounded((2 * delta) as i32) as i64
        };
    next_exact_string(rng, size)
}

fn next_price(rng: &mut JavaRandom) -> i64 {
    java_round(10f64.powf(rng.next_double() * 6.0) * 100.0)
}

struct ChannelTables {
    hot_urls: [String; 4],
    cache: Vec<(String, String)>,
}

fn channel_tables() -> &'static ChannelTables {
    static TABLES: OnceLock<ChannelTables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut rng = JavaRandom::new(-1);
        let base_url = |rng: &mut JavaRandom| {
            format!(
                "https://www.nexmark.com/{}/{}/{}/item.htm?query=1",
                next_string(rng, 5, b'_'),
                next_string(rng, 5, b'_'),
                next_string(rng, 5, b'_')
            )
        };
        let hot_urls = std::array::from_fn(|_| base_url(&mut rng));
        let cache = (0..CHANNELS_NUMBER)
            .map(|i| {
                let mut url = base_url(&mut rng);
                if rng.next_int_bounded(10) > 0 {
                    // Java's Math.abs(Integer.reverse(i)) overflows for i = 1; keep the quirk.
                    url.push_str(&format!("&channel_id={}", i.reverse_bits().wrapping_abs()));
                }
                (format!("channel-{i}"), url)
            })
            .collect();
        ChannelTables { hot_urls, cache }
    })
}

/// Generates the event with event number `n` (= event id; first event number 0).
pub fn event(config: &NexmarkConfig, n: i64) -> Event {
    let event_id = n;
    let ts = config.timestamp_ms(n);
    let mut rng = JavaRandom::new(event_id);
    let rem = event_id % TOTAL_PROPORTION;
    if rem < PERSON_PROPORTION {
        let id = last_base0_person_id(event_id) + FIRST_PERSON_ID;
        let name = format!(
            "{} {}",
            FIRST_NAMES[rng.next_int_bounded(FIRST_NAMES.len() as i32) as usize],
            LAST_NAMES[rng.next_int_bounded(LAST_NAMES.len() as i32) as usize]
        );
        let email_address = format!(
            "{}@{}.com",
            next_string(&mut rng, 7, b' '),
            next_string(&mut rng, 5, b' ')
        );
        let credit_card = (0..4)
            .map(|_| format!("{:04}", rng.next_int_bounded(10_000)))
            .collect::<Vec<_>>()
            .join(" ");
        let city = CITIES[rng.next_int_bounded(CITIES.len() as i32) as usize];
        let state = STATES[rng.next_int_bounded(STATES.len() as i32) as usize];
        let current_size = 8
            + (name.len() + email_address.len() + credit_card.len() + city.len() + state.len())
                as i64;
        let extra = next_extra(&mut rng, current_size, AVG_PERSON_BYTE_SIZE);
        Event::Person(Person {
            id,
            name,
            email_address,
            credit_card,
            city,
            state,
            date_time: ts,
            extra,
        })
    } else if rem < PERSON_PROPORTION + AUCTION_PROPORTION {
        let id = last_base0_auction_id(event_id) + FIRST_AUCTION_ID;
        let seller = if rng.next_int_bounded(HOT_SELLERS_PROBABILITY_RATIO) > 0 {
            (last_base0_person_id(event_id) / HOT_SELLER_RATIO) * HOT_SELLER_RATIO
        } else {
            next_base0_person_id(event_id, &mut rng)
        } + FIRST_PERSON_ID;
        let category = FIRST_CATEGORY_ID + rng.next_int_bounded(NUM_CATEGORIES) as i64;
        let initial_bid = next_price(&mut rng);
        let num_events_for_auctions =
            (NUM_IN_FLIGHT_AUCTIONS * TOTAL_PROPORTION) / AUCTION_PROPORTION;
        let future_auction = config.timestamp_ms(n + num_events_for_auctions);
        let horizon_ms = future_auction - ts;
        let expires = ts + 1 + next_long(&mut rng, (horizon_ms * 2).max(1));
        let item_name = next_string(&mut rng, 20, b' ');
        let description = next_string(&mut rng, 100, b' ');
        let reserve = initial_bid + next_price(&mut rng);
        let current_size = 8 + item_name.len() as i64 + description.len() as i64 + 40;
        let extra = next_extra(&mut rng, current_size, AVG_AUCTION_BYTE_SIZE);
        Event::Auction(Auction {
            id,
            item_name,
            description,
            initial_bid,
            reserve,
            date_time: ts,
            expires,
            seller,
            category,
            extra,
        })
    } else {
        let auction = if rng.next_int_bounded(HOT_AUCTIONS_PROBABILITY_RATIO) > 0 {
            (last_base0_auction_id(event_id) / HOT_AUCTION_RATIO) * HOT_AUCTION_RATIO
        } else {
            next_base0_auction_id(event_id, &mut rng)
        } + FIRST_AUCTION_ID;
        let bidder = if rng.next_int_bounded(HOT_BIDDERS_PROBABILITY_RATIO) > 0 {
            (last_base0_person_id(event_id) / HOT_BIDDER_RATIO) * HOT_BIDDER_RATIO + 1
        } else {
            next_base0_person_id(event_id, &mut rng)
        } + FIRST_PERSON_ID;
        let price = next_price(&mut rng);
        let tables = channel_tables();
        let (channel, url): (&'static str, &'static str) = if rng.next_int_bounded(2) > 0 {
            let i = rng.next_int_bounded(HOT_CHANNELS.len() as i32) as usize;
            (HOT_CHANNELS[i], tables.hot_urls[i].as_str())
        } else {
            let (c, u) = &tables.cache[rng.next_int_bounded(CHANNELS_NUMBER) as usize];
            (c.as_str(), u.as_str())
        };
        let extra = next_extra(&mut rng, 32, AVG_BID_BYTE_SIZE);
        Event::Bid(Bid {
            auction,
            bidder,
            price,
            channel,
            url,
            date_time: ts,
            extra,
        })
    }
}

/// Which JSON field naming and timestamp style to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonDialect {
    /// nexmark/nexmark (Flink): camelCase, `yyyy-MM-dd HH:mm:ss[.f]` without trailing zeros.
    Flink,
    /// RisingWave nexmark-bench: snake_case, chrono `%Y-%m-%d %H:%M:%S%.f`.
    RisingWave,
}

fn write_timestamp(out: &mut Vec<u8>, ms: i64, dialect: JsonDialect) {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let _ = write!(
        out,
        "\"{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
    if millis != 0 {
        match dialect {
            JsonDialect::RisingWave => {
                let _ = write!(out, ".{millis:03}");
            }
            JsonDialect::Flink => {
                let text = format!("{millis:03}");
                let _ = write!(out, ".{}", text.trim_end_matches('0'));
            }
        }
    }
    out.push(b'"');
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Writes `event` as one line of JSON (no newline) in the envelope
/// `{"event_type":…,"person":…,"auction":…,"bid":…}`.
pub fn write_json(event: &Event, dialect: JsonDialect, out: &mut Vec<u8>) {
    let _ = write!(out, "{{\"event_type\":{},\"person\":", event.event_type());
    match event {
        Event::Person(p) => write_person_object(p, dialect, out),
        _ => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"auction\":");
    match event {
        Event::Auction(a) => write_auction_object(a, dialect, out),
        _ => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"bid\":");
    match event {
        Event::Bid(b) => write_bid_object(b, dialect, out),
        _ => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

/// The field name of `dialect`: camelCase for Flink, snake_case for RisingWave.
fn field_namer(dialect: JsonDialect) -> impl Fn(&'static str, &'static str) -> &'static str {
    move |camel, snake| {
        if dialect == JsonDialect::Flink {
            camel
        } else {
            snake
        }
    }
}

/// Writes a person alone as a flat JSON object (the `person` topic of a separate-topics layout).
pub fn write_person_object(p: &Person, dialect: JsonDialect, out: &mut Vec<u8>) {
    let name = field_namer(dialect);
    let _ = write!(out, "{{\"id\":{},\"name\":", p.id);
    write_json_string(out, &p.name);
    let _ = write!(out, ",\"{}\":", name("emailAddress", "email_address"));
    write_json_string(out, &p.email_address);
    let _ = write!(out, ",\"{}\":", name("creditCard", "credit_card"));
    write_json_string(out, &p.credit_card);
    out.extend_from_slice(b",\"city\":");
    write_json_string(out, p.city);
    out.extend_from_slice(b",\"state\":");
    write_json_string(out, p.state);
    let _ = write!(out, ",\"{}\":", name("dateTime", "date_time"));
    write_timestamp(out, p.date_time, dialect);
    out.extend_from_slice(b",\"extra\":");
    write_json_string(out, &p.extra);
    out.push(b'}');
}

/// Writes an auction alone as a flat JSON object (the `auction` topic of a separate-topics
/// layout).
pub fn write_auction_object(a: &Auction, dialect: JsonDialect, out: &mut Vec<u8>) {
    let name = field_namer(dialect);
    let _ = write!(
        out,
        "{{\"id\":{},\"{}\":",
        a.id,
        name("itemName", "item_name")
    );
    write_json_string(out, &a.item_name);
    out.extend_from_slice(b",\"description\":");
    write_json_string(out, &a.description);
    let _ = write!(
        out,
        ",\"{}\":{},\"reserve\":{},\"{}\":",
        name("initialBid", "initial_bid"),
        a.initial_bid,
        a.reserve,
        name("dateTime", "date_time")
    );
    write_timestamp(out, a.date_time, dialect);
    out.extend_from_slice(b",\"expires\":");
    write_timestamp(out, a.expires, dialect);
    let _ = write!(
        out,
        ",\"seller\":{},\"category\":{},\"extra\":",
        a.seller, a.category
    );
    write_json_string(out, &a.extra);
    out.push(b'}');
}

/// Writes a bid alone as a flat JSON object (the `bid` topic of a separate-topics layout).
pub fn write_bid_object(b: &Bid, dialect: JsonDialect, out: &mut Vec<u8>) {
    let _ = write!(
        out,
        "{{\"auction\":{},\"bidder\":{},\"price\":{},\"channel\":",
        b.auction, b.bidder, b.price
    );
    write_json_string(out, b.channel);
    out.extend_from_slice(b",\"url\":");
    write_json_string(out, b.url);
    let _ = write!(
        out,
        ",\"{}\":",
        field_namer(dialect)("dateTime", "date_time")
    );
    write_timestamp(out, b.date_time, dialect);
    out.extend_from_slice(b",\"extra\":");
    write_json_string(out, &b.extra);
    out.push(b'}');
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

fn person_fields() -> Fields {
    Fields::from(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("email_address", DataType::Utf8, false),
        Field::new("credit_card", DataType::Utf8, false),
        Field::new("city", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("date_time", ts_type(), false),
        Field::new("extra", DataType::Utf8, false),
    ])
}

fn auction_fields() -> Fields {
    Fields::from(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("item_name", DataType::Utf8, false),
        Field::new("description", DataType::Utf8, false),
        Field::new("initial_bid", DataType::Int64, false),
        Field::new("reserve", DataType::Int64, false),
        Field::new("date_time", ts_type(), false),
        Field::new("expires", ts_type(), false),
        Field::new("seller", DataType::Int64, false),
        Field::new("category", DataType::Int64, false),
        Field::new("extra", DataType::Utf8, false),
    ])
}

/// The fields of a bid record (flat, snake_case).
pub fn bid_fields() -> Fields {
    Fields::from(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("bidder", DataType::Int64, false),
        Field::new("price", DataType::Int64, false),
        Field::new("channel", DataType::Utf8, false),
        Field::new("url", DataType::Utf8, false),
        Field::new("date_time", ts_type(), false),
        Field::new("extra", DataType::Utf8, false),
    ])
}

/// Schema of the generator source: `event_type`, nullable `person`/`auction`/`bid` structs
/// (snake_case fields) and the event time `date_time`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_type", DataType::Int32, false),
        Field::new("person", DataType::Struct(person_fields()), true),
        Field::new("auction", DataType::Struct(auction_fields()), true),
        Field::new("bid", DataType::Struct(bid_fields()), true),
        Field::new("date_time", ts_type(), false),
    ]))
}

/// Builds the Arrow batch of events `first..first + count`.
pub fn batch(config: &NexmarkConfig, first: i64, count: usize) -> RecordBatch {
    let events: Vec<Event> = (0..count as i64)
        .map(|i| event(config, first + i))
        .collect();
    let mut event_type = Int32Builder::with_capacity(count);
    let mut date_time = TimestampMillisecondBuilder::with_capacity(count);
    for e in &events {
        event_type.append_value(e.event_type());
        date_time.append_value(e.date_time());
    }
    let persons: Vec<Option<&Person>> = events
        .iter()
        .map(|e| match e {
            Event::Person(p) => Some(p),
            _ => None,
        })
        .collect();
    let auctions: Vec<Option<&Auction>> = events
        .iter()
        .map(|e| match e {
            Event::Auction(a) => Some(a),
            _ => None,
        })
        .collect();
    let bids: Vec<Option<&Bid>> = events
        .iter()
        .map(|e| match e {
            Event::Bid(b) => Some(b),
            _ => None,
        })
        .collect();
    fn i64s(count: usize, f: impl Fn(usize) -> i64) -> ArrayRef {
        let mut b = Int64Builder::with_capacity(count);
        (0..count).for_each(|i| b.append_value(f(i)));
        Arc::new(b.finish())
    }
    fn strs<'a>(count: usize, f: impl Fn(usize) -> &'a str) -> ArrayRef {
        let mut b = StringBuilder::with_capacity(count, count * 8);
        (0..count).for_each(|i| b.append_value(f(i)));
        Arc::new(b.finish())
    }
    fn tss(count: usize, f: impl Fn(usize) -> i64) -> ArrayRef {
        let mut b = TimestampMillisecondBuilder::with_capacity(count);
        (0..count).for_each(|i| b.append_value(f(i)));
        Arc::new(b.finish())
    }
    let nulls = |present: Vec<bool>| Some(NullBuffer::from(present));
    let person = {
        let p = |i: usize| persons[i];
        StructArray::new(
            person_fields(),
            vec![
                i64s(count, |i| p(i).map_or(0, |p| p.id)),
                strs(count, |i| p(i).map_or("", |p| p.name.as_str())),
                strs(count, |i| p(i).map_or("", |p| p.email_address.as_str())),
                strs(count, |i| p(i).map_or("", |p| p.credit_card.as_str())),
                strs(count, |i| p(i).map_or("", |p| p.city)),
                strs(count, |i| p(i).map_or("", |p| p.state)),
                tss(count, |i| p(i).map_or(0, |p| p.date_time)),
                strs(count, |i| p(i).map_or("", |p| p.extra.as_str())),
            ],
            nulls(persons.iter().map(Option::is_some).collect()),
        )
    };
    let auction = {
        let a = |i: usize| auctions[i];
        StructArray::new(
            auction_fields(),
            vec![
                i64s(count, |i| a(i).map_or(0, |a| a.id)),
                strs(count, |i| a(i).map_or("", |a| a.item_name.as_str())),
                strs(count, |i| a(i).map_or("", |a| a.description.as_str())),
                i64s(count, |i| a(i).map_or(0, |a| a.initial_bid)),
                i64s(count, |i| a(i).map_or(0, |a| a.reserve)),
                tss(count, |i| a(i).map_or(0, |a| a.date_time)),
                tss(count, |i| a(i).map_or(0, |a| a.expires)),
                i64s(count, |i| a(i).map_or(0, |a| a.seller)),
                i64s(count, |i| a(i).map_or(0, |a| a.category)),
                strs(count, |i| a(i).map_or("", |a| a.extra.as_str())),
            ],
            nulls(auctions.iter().map(Option::is_some).collect()),
        )
    };
    let bid = {
        let b = |i: usize| bids[i];
        StructArray::new(
            bid_fields(),
            vec![
                i64s(count, |i| b(i).map_or(0, |b| b.auction)),
                i64s(count, |i| b(i).map_or(0, |b| b.bidder)),
                i64s(count, |i| b(i).map_or(0, |b| b.price)),
                strs(count, |i| b(i).map_or("", |b| b.channel)),
                strs(count, |i| b(i).map_or("", |b| b.url)),
                tss(count, |i| b(i).map_or(0, |b| b.date_time)),
                strs(count, |i| b(i).map_or("", |b| b.extra.as_str())),
            ],
            nulls(bids.iter().map(Option::is_some).collect()),
        )
    };
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(event_type.finish()),
            Arc::new(person),
            Arc::new(auction),
            Arc::new(bid),
            Arc::new(date_time.finish()),
        ],
    )
    .expect("the nexmark batch matches its schema")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(dialect: JsonDialect, n: i64) -> Vec<u8> {
        let config = NexmarkConfig::default();
        let mut out = Vec::new();
        for i in 0..n {
            write_json(&event(&config, i), dialect, &mut out);
            out.push(b'\n');
        }
        out
    }

    #[test]
    fn first_thousand_events_match_the_flink_golden_sample() {
        let expected = include_bytes!("../../tests/data/nexmark/first1000_flink_json.jsonl");
        let actual = lines(JsonDialect::Flink, 1000);
        for (i, (a, e)) in actual
            .split(|b| *b == b'\n')
            .zip(expected.split(|b| *b == b'\n'))
            .enumerate()
        {
            assert_eq!(
                std::str::from_utf8(a).unwrap(),
                std::str::from_utf8(e).unwrap(),
                "event {i} differs"
            );
        }
        assert_eq!(actual.as_slice(), expected.as_slice());
    }

    #[test]
    fn first_thousand_events_match_the_risingwave_golden_sample() {
        let expected = include_bytes!("../../tests/data/nexmark/first1000_risingwave_json.jsonl");
        assert_eq!(
            lines(JsonDialect::RisingWave, 1000).as_slice(),
            expected.as_slice()
        );
    }

    #[test]
    fn first_hundred_thousand_events_hash_to_the_published_sum() {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(lines(JsonDialect::Flink, 100_000));
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        // shared/nexmark/samples/SHA256SUMS.txt: first100k_flink_json.jsonl
        assert_eq!(
            hex,
            "b640c0665ec10c435b692e904b43f2b04d9258b5cb0270879a279b0f10bcad13"
        );
    }

    #[test]
    fn batch_rows_agree_with_events() {
        let config = NexmarkConfig::default();
        let batch = batch(&config, 40, 20);
        assert_eq!(batch.num_rows(), 20);
        let types = batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int32Array>()
            .unwrap();
        // Event 50 is a person, 51..=53 auctions, the rest bids.
        assert_eq!(types.value(10), 0);
        assert_eq!(types.value(11), 1);
        assert_eq!(types.value(14), 2);
        assert_eq!(batch.column(3).null_count(), 4);
    }
}
