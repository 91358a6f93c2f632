//! Consumed messages as librdkafka holds them, and a bounded read's partitions taken from
//! librdkafka many messages per call.
//!
//! The `rdkafka` crate hands out one message per poll, and each poll pays for itself: the
//! crate's event dispatch, an `Arc` per message, several clock reads (librdkafka's poll
//! bookkeeping and the crate's deadline). `rd_kafka_consume_batch_queue` pays those once per
//! call. It serves every other kind of operation on its queue itself, though, without the
//! crate's dispatch: logs would be dropped, errors turned into logs and dropped, and a group
//! rebalance answered with an unassign. So it must only ever see messages: [`BatchQueue`]
//! forwards a consumer's partitions to a queue of their own, and everything else stays on the
//! consumer's queue, served by the crate's poll as before.
//!
//! [`Consumed`] reads one message's fields for both paths, so a message is handled alike
//! whichever queue it came from.

use std::ffi::{CStr, CString};
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;

/// How many messages one call takes at most.
const MAX_TAKEN: usize = 1024;

/// A consumed message (or a consumer error in its place), borrowed from librdkafka.
#[derive(Clone, Copy)]
pub(crate) struct Consumed<'a> {
    message: &'a rdsys::rd_kafka_message_t,
}

impl<'a> Consumed<'a> {
    /// # Safety
    /// `message` is a live message that outlives `'a`.
    pub(crate) unsafe fn from_ptr(message: *const rdsys::rd_kafka_message_t) -> Self {
        Self {
            message: unsafe { &*message },
        }
    }

    /// The error librdkafka delivered in place of a message, as the `rdkafka` crate reports it.
    pub(crate) fn error(&self) -> Option<KafkaError> {
        match self.message.err {
            rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => None,
            rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF => {
                Some(KafkaError::PartitionEOF(self.message.partition))
            }
            e => Some(KafkaError::MessageConsumption(e.into())),
        }
    }

    pub(crate) fn partition(&self) -> i32 {
        self.message.partition
    }

    pub(crate) fn offset(&self) -> i64 {
        self.message.offset
    }

    pub(crate) fn payload(&self) -> Option<&'a [u8]> {
        bytes(self.message.payload, self.message.len)
    }

    pub(crate) fn key(&self) -> Option<&'a [u8]> {
        bytes(self.message.key, self.message.key_len)
    }

    /// Milliseconds since the epoch, when the record has a timestamp.
    pub(crate) fn timestamp_ms(&self) -> Option<i64> {
        let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        let ms = unsafe { rdsys::rd_kafka_message_timestamp(self.message, &mut kind) };
        (ms != -1 && kind != rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE)
            .then_some(ms)
    }

    /// The record's headers in order, each name with its value (`None`: a null value). A name
    /// that is not UTF-8 reads as U+FFFD (the `rdkafka` crate's own reader panics on one).
    pub(crate) fn headers(&self) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> {
        let mut headers: *mut rdsys::rd_kafka_headers_t = std::ptr::null_mut();
        // Parses the headers once per message (librdkafka keeps them with the message).
        let found = unsafe { rdsys::rd_kafka_message_headers(self.message, &mut headers) };
        let headers = (found == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
            .then_some(headers)
            .filter(|h| !h.is_null());
        let mut index = 0;
        std::iter::from_fn(move || {
            let headers = headers?;
            let mut name: *const std::os::raw::c_char = std::ptr::null();
            let mut value: *const std::os::raw::c_void = std::ptr::null();
            let mut size = 0usize;
            let err = unsafe {
                rdsys::rd_kafka_header_get_all(headers, index, &mut name, &mut value, &mut size)
            };
            if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                return None;
            }
            index += 1;
            let name = unsafe { CStr::from_ptr::<'a>(name) }
                .to_str()
                .unwrap_or("\u{FFFD}");
            Some((name, bytes(value.cast_mut(), size)))
        })
    }
}

/// The `len` bytes at `data`, borrowed for `'a`; `None` for a null pointer (no payload, no key).
fn bytes<'a>(data: *mut std::os::raw::c_void, len: usize) -> Option<&'a [u8]> {
    if data.is_null() {
        None
    } else if len == 0 {
        Some(&[])
    } else {
        Some(unsafe { std::slice::from_raw_parts(data as *const u8, len) })
    }
}

/// A queue the messages of a consumer's partitions are forwarded to, taken in batches.
///
/// Messages fetched before [`BatchQueue::forward`] forwarded their partition are still on the
/// consumer's queue: a reader forwards first, then serves everything there
/// ([`BatchQueue::consumer_has_more`]), then takes from here, so that each partition is read in
/// order. librdkafka stops forwarding a partition when it stops fetching it (a revocation, an
/// assignment again) and keeps its next messages with the partition until it is forwarded
/// again: a reader forwards its whole assignment again after every change of it (and on a
/// timer, for a stop processed late). A wait for messages here ends as soon as the consumer's
/// queue gets anything (an event, a rebalance), so that events are served as promptly as before.
///
/// Must be dropped before its consumer.
pub(crate) struct BatchQueue {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    consumer_queue: NonNull<rdsys::rd_kafka_queue_t>,
}

// librdkafka's queues may be used from any thread; `BatchQueue` holds no message.
unsafe impl Send for BatchQueue {}

/// Called by librdkafka (on any thread, holding the consumer queue's lock) when the consumer's
/// queue gets something while empty: ends a wait on the batch queue `queue`.
unsafe extern "C" fn wake(_client: *mut rdsys::rd_kafka_t, queue: *mut std::os::raw::c_void) {
    unsafe { rdsys::rd_kafka_queue_yield(queue.cast()) };
}

impl BatchQueue {
    /// A queue for `consumer`'s messages; no partition is forwarded yet. `None` when librdkafka
    /// gives none (a consumer without a `group.id` has no consumer queue).
    pub(crate) fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Option<Self> {
        let client = consumer.client().native_ptr();
        let queue = NonNull::new(unsafe { rdsys::rd_kafka_queue_new(client) })?;
        let Some(consumer_queue) =
            NonNull::new(unsafe { rdsys::rd_kafka_queue_get_consumer(client) })
        else {
            unsafe { rdsys::rd_kafka_queue_destroy(queue.as_ptr()) };
            return None;
        };
        unsafe {
            rdsys::rd_kafka_queue_cb_event_enable(
                consumer_queue.as_ptr(),
                Some(wake),
                queue.as_ptr().cast(),
            )
        };
        Some(Self {
            queue,
            consumer_queue,
        })
    }

    /// Forwards the messages librdkafka fetches from now on for `partitions` of `topic` to this
    /// queue (partitions librdkafka knows no queue for are left as they are).
    pub(crate) fn forward<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        topic: &str,
        partitions: impl IntoIterator<Item = i32>,
    ) {
        let client = consumer.client().native_ptr();
        let Ok(name) = CString::new(topic) else {
            return;
        };
        for partition in partitions {
            let source =
                unsafe { rdsys::rd_kafka_queue_get_partition(client, name.as_ptr(), partition) };
            if !source.is_null() {
                unsafe {
                    rdsys::rd_kafka_queue_forward(source, self.queue.as_ptr());
                    rdsys::rd_kafka_queue_destroy(source);
                }
            }
        }
    }

    /// Whether the consumer's own queue holds anything: messages fetched before their partition
    /// was forwarded, logs, errors. The reader serves it before taking from this queue.
    pub(crate) fn consumer_has_more(&self) -> bool {
        unsafe { rdsys::rd_kafka_queue_length(self.consumer_queue.as_ptr()) > 0 }
    }

    /// Takes up to `max` messages (at most 1024). librdkafka waits up to `wait` (whole
    /// milliseconds) for all `max`, not only the first: a wait for what comes next takes one.
    pub(crate) fn take(&mut self, max: usize, wait: Duration) -> Taken {
        let mut messages = vec![std::ptr::null_mut(); max.clamp(1, MAX_TAKEN)];
        let wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        let n = unsafe {
            rdsys::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                wait_ms,
                messages.as_mut_ptr(),
                messages.len(),
            )
        };
        // Negative only for invalid arguments, which these are not.
        messages.truncate(usize::try_from(n).unwrap_or(0));
        Taken { messages, next: 0 }
    }
}

impl Drop for BatchQueue {
    fn drop(&mut self) {
        // Once this returns no wake-up runs (both take the consumer queue's lock). What is
        // still forwarded to the queue after it is destroyed is dropped by librdkafka.
        unsafe {
            rdsys::rd_kafka_queue_cb_event_enable(
                self.consumer_queue.as_ptr(),
                None,
                std::ptr::null_mut(),
            );
            rdsys::rd_kafka_queue_destroy(self.queue.as_ptr());
            rdsys::rd_kafka_queue_destroy(self.consumer_queue.as_ptr());
        }
    }
}

/// Messages taken by one [`BatchQueue::take`], handed out in order; all destroyed when this is
/// dropped, which must be before their consumer is.
pub(crate) struct Taken {
    messages: Vec<*mut rdsys::rd_kafka_message_t>,
    next: usize,
}

// A message may be destroyed on any thread.
unsafe impl Send for Taken {}

impl Taken {
    /// Whether every message has been handed out.
    pub(crate) fn is_empty(&self) -> bool {
        self.next >= self.messages.len()
    }

    /// The next message, alive while this is.
    pub(crate) fn next(&mut self) -> Option<Consumed<'_>> {
        let message = *self.messages.get(self.next)?;
        self.next += 1;
        Some(unsafe { Consumed::from_ptr(message) })
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        for &m in &self.messages {
            unsafe { rdsys::rd_kafka_message_destroy(m) };
        }
    }
}
