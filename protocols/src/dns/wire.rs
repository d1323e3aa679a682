//! The messages a stub resolver sends and the answers it accepts (sans-IO): one question per
//! query, a fresh id each time, and an answer taken only when it is a response to that very
//! question. Everything else a socket delivers is refused with the reason, so the caller can
//! keep waiting for the real answer (a spoofed or stale datagram never ends a lookup).

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

/// Which address records a query asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// `A` records: IPv4.
    V4,
    /// `AAAA` records: IPv6.
    V6,
}

impl Family {
    fn record_type(self) -> RecordType {
        match self {
            Family::V4 => RecordType::A,
            Family::V6 => RecordType::AAAA,
        }
    }

    /// Whether `ip` is of this family.
    pub fn holds(self, ip: &IpAddr) -> bool {
        matches!(
            (self, ip),
            (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        )
    }
}

/// The largest chain of aliases followed inside one answer.
const MAX_CNAME_HOPS: usize = 16;

/// A query on the wire and what its answer must match.
#[derive(Debug)]
pub(crate) struct Question {
    pub(crate) id: u16,
    pub(crate) name: Name,
    pub(crate) family: Family,
    pub(crate) bytes: Vec<u8>,
}

impl Question {
    /// A recursive query for `name`'s `family` records with a random id, offering `payload`
    /// bytes of UDP answer through EDNS(0) (0: no EDNS, answers of 512 bytes at most).
    pub(crate) fn new(name: &Name, family: Family, payload: u16) -> Result<Question, String> {
        let mut message = Message::query();
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(name.clone(), family.record_type()));
        if payload > 512 {
            let mut edns = Edns::new();
            edns.set_max_payload(payload);
            message.set_edns(edns);
        }
        let bytes = message
            .to_vec()
            .map_err(|e| format!("{name}: cannot be encoded: {e}"))?;
        Ok(Question {
            id: message.metadata.id,
            name: name.clone(),
            family,
            bytes,
        })
    }

    /// The query with the two-byte length TCP puts in front of it.
    pub(crate) fn tcp_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len() + 2);
        out.extend_from_slice(&(self.bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.bytes);
        out
    }
}

/// What an accepted answer says.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Reply {
    /// Addresses of the family asked for, the name they belong to at the end of any aliases,
    /// and how long they may be kept (the smallest TTL on the way).
    Addrs {
        addrs: Vec<IpAddr>,
        canonical: String,
        ttl: u32,
    },
    /// The name exists but has no record of the family asked for (RFC 2308's NODATA). The
    /// TTL is the negative one its zone's SOA gives, when the answer carries it.
    NoData { ttl: Option<u32> },
    /// The name does not exist (NXDOMAIN).
    NoName { ttl: Option<u32> },
    /// The answer did not fit a datagram: ask again over TCP.
    Truncated,
    /// The server could not answer (SERVFAIL, REFUSED, NOTIMP, FORMERR...): ask another.
    Failed(&'static str),
}

/// Why a datagram was not taken as the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not a DNS message.
    Undecodable,
    /// A DNS message, but not the response to this question (another id, another question,
    /// a query): stale, misdirected or spoofed.
    NotOurs,
}

/// Checks `bytes` as the answer to `question` and reads it.
pub(crate) fn accept(question: &Question, bytes: &[u8]) -> Result<Reply, Refused> {
    // The header alone first: most strays are told apart by their id, and a truncated answer
    // may be cut anywhere after its header (the next step is TCP either way).
    if bytes.len() < 12 {
        return Err(Refused::Undecodable);
    }
    if u16::from_be_bytes([bytes[0], bytes[1]]) != question.id || bytes[2] & 0x80 == 0 {
        return Err(Refused::NotOurs);
    }
    if bytes[2] & 0x02 != 0 {
        return Ok(Reply::Truncated);
    }
    let message = Message::from_vec(bytes).map_err(|_| Refused::Undecodable)?;
    let asked = match message.queries.as_slice() {
        [only] => only,
        _ => return Err(Refused::NotOurs),
    };
    if message.metadata.message_type != MessageType::Response
        || message.metadata.op_code != OpCode::Query
        || asked.query_type() != question.family.record_type()
        || !asked.name().eq_ignore_root(&question.name)
    {
        return Err(Refused::NotOurs);
    }
    match message.metadata.response_code {
        ResponseCode::NoError => Ok(read_answers(&message, question)),
        ResponseCode::NXDomain => Ok(Reply::NoName {
            ttl: negative_ttl(&message),
        }),
        code => Ok(Reply::Failed(code.to_str())),
    }
}

/// Follows the aliases from the question's name through the answer section and collects the
/// addresses at its end.
fn read_answers(message: &Message, question: &Question) -> Reply {
    let wanted = question.family.record_type();
    let mut current = question.name.clone();
    let mut ttl = u32::MAX;
    let mut addrs = Vec::new();
    for _ in 0..MAX_CNAME_HOPS {
        let mut next = None;
        for record in &message.answers {
            if !record.name.eq_ignore_root(&current) {
                continue;
            }
            match &record.data {
                RData::A(a) if wanted == RecordType::A => {
                    addrs.push(IpAddr::V4(a.0));
                    ttl = ttl.min(record.ttl);
                }
                RData::AAAA(a) if wanted == RecordType::AAAA => {
                    addrs.push(IpAddr::V6(a.0));
                    ttl = ttl.min(record.ttl);
                }
                RData::CNAME(target) if next.is_none() => {
                    next = Some(target.0.clone());
                    ttl = ttl.min(record.ttl);
                }
                _ => {}
            }
        }
        match next {
            Some(target) if addrs.is_empty() => current = target,
            _ => break,
        }
    }
    if addrs.is_empty() {
        return Reply::NoData {
            ttl: negative_ttl(message),
        };
    }
    Reply::Addrs {
        addrs,
        canonical: display_name(&current),
        ttl,
    }
}

/// RFC 2308 §5: a negative answer is kept for the smaller of its SOA record's TTL and the
/// SOA's MINIMUM field; without an SOA it is not kept at all.
fn negative_ttl(message: &Message) -> Option<u32> {
    message
        .authorities
        .iter()
        .find_map(|record| match &record.data {
            RData::SOA(soa) => Some(record.ttl.min(soa.minimum)),
            _ => None,
        })
}

/// A name as users write it: lower case, without the root's final dot.
pub(crate) fn display_name(name: &Name) -> String {
    let mut text = name.to_lowercase().to_ascii();
    if text.len() > 1 && text.ends_with('.') {
        text.pop();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn name(text: &str) -> Name {
        Name::from_ascii(text).expect("test names are valid")
    }

    fn answer_to(
        question: &Question,
        code: ResponseCode,
        fill: impl FnOnce(&mut Message),
    ) -> Vec<u8> {
        let mut message = Message::response(question.id, OpCode::Query);
        message.metadata.response_code = code;
        message.add_query(Query::query(
            question.name.clone(),
            question.family.record_type(),
        ));
        fill(&mut message);
        message.to_vec().expect("test answers encode")
    }

    #[test]
    fn a_query_asks_one_question_recursively_with_edns() {
        let q = Question::new(&name("example.test."), Family::V6, 1232).unwrap();
        let message = Message::from_vec(&q.bytes).unwrap();
        assert_eq!(message.metadata.id, q.id);
        assert!(message.metadata.recursion_desired);
        assert_eq!(message.queries.len(), 1);
        assert_eq!(message.queries[0].query_type(), RecordType::AAAA);
        assert_eq!(message.edns.as_ref().map(|e| e.max_payload()), Some(1232));
        assert_eq!(&q.tcp_bytes()[..2], &(q.bytes.len() as u16).to_be_bytes());
    }

    #[test]
    fn addresses_are_read_through_aliases_with_the_smallest_ttl() {
        let q = Question::new(&name("www.example.test."), Family::V4, 1232).unwrap();
        let bytes = answer_to(&q, ResponseCode::NoError, |m| {
            m.add_answer(Record::from_rdata(
                name("WWW.example.test."),
                300,
                RData::CNAME(CNAME(name("edge.example.test."))),
            ));
            m.add_answer(Record::from_rdata(
                name("edge.example.test."),
                60,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
            ));
            m.add_answer(Record::from_rdata(
                name("edge.example.test."),
                90,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 2))),
            ));
            // A record for another name is not ours to take.
            m.add_answer(Record::from_rdata(
                name("other.test."),
                5,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 9))),
            ));
        });
        assert_eq!(
            accept(&q, &bytes),
            Ok(Reply::Addrs {
                addrs: vec![[192, 0, 2, 1].into(), [192, 0, 2, 2].into()],
                canonical: "edge.example.test".into(),
                ttl: 60,
            })
        );
    }

    #[test]
    fn negative_answers_carry_the_soa_ttl() {
        let q = Question::new(&name("nothing.test."), Family::V6, 0).unwrap();
        let soa = SOA::new(name("ns.test."), name("admin.test."), 1, 60, 60, 60, 30);
        let bytes = answer_to(&q, ResponseCode::NXDomain, |m| {
            m.add_authority(Record::from_rdata(
                name("test."),
                120,
                RData::SOA(soa.clone()),
            ));
        });
        assert_eq!(accept(&q, &bytes), Ok(Reply::NoName { ttl: Some(30) }));
        let bytes = answer_to(&q, ResponseCode::NoError, |m| {
            m.add_answer(Record::from_rdata(
                name("nothing.test."),
                50,
                RData::A(A(Ipv4Addr::LOCALHOST)),
            ));
        });
        assert_eq!(accept(&q, &bytes), Ok(Reply::NoData { ttl: None }));
        let bytes = answer_to(&q, ResponseCode::ServFail, |_| {});
        assert!(matches!(accept(&q, &bytes), Ok(Reply::Failed(_))));
    }

    #[test]
    fn strays_are_refused_and_truncation_is_seen_in_the_header() {
        let q = Question::new(&name("a.test."), Family::V6, 1232).unwrap();
        let good = answer_to(&q, ResponseCode::NoError, |m| {
            m.add_answer(Record::from_rdata(
                name("a.test."),
                10,
                RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)),
            ));
        });
        assert!(matches!(accept(&q, &good), Ok(Reply::Addrs { .. })));
        let mut other_id = good.clone();
        other_id[1] ^= 1;
        assert_eq!(accept(&q, &other_id), Err(Refused::NotOurs));
        // The query itself echoed back is no answer.
        assert_eq!(accept(&q, &q.bytes), Err(Refused::NotOurs));
        let other = Question::new(&name("b.test."), Family::V6, 1232).unwrap();
        let mut wrong_question = answer_to(&other, ResponseCode::NoError, |_| {});
        wrong_question[..2].copy_from_slice(&q.id.to_be_bytes());
        assert_eq!(accept(&q, &wrong_question), Err(Refused::NotOurs));
        assert_eq!(accept(&q, &good[..7]), Err(Refused::Undecodable));
        let mut cut = good[..good.len() - 3].to_vec();
        assert_eq!(accept(&q, &cut), Err(Refused::Undecodable));
        cut[2] |= 0x02;
        assert_eq!(accept(&q, &cut), Ok(Reply::Truncated));
        for len in 0..good.len() {
            let _ = accept(&q, &good[..len]);
        }
    }
}
