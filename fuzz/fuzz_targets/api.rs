#![no_main]
//! Fuzz target: what relay-control's HTTPS API and relayd's management socket parse from a
//! request must never panic. The first byte picks the parser, the rest is its input:
//! every JSON body type `parse_body` reads (then its bounds checks, where the handler runs
//! them), the path segments (SdkAppId, room, CIDR), the query string, the TRTC actions'
//! room and user lists, the TC3 timestamp header, and a management-socket request line.
use control::api;
use control::server::routes::{parse_body, parse_cidr, parse_query, path_room, path_sdkappid, t_str_room, t_users};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&which, input)) = data.split_first() else { return };
    let text = std::str::from_utf8(input).ok();
    match which % 16 {
        0 => {
            if let Ok(a) = parse_body::<api::CreateApp>(input) {
                let _ = a.quotas.map(|q| q.check());
            }
        }
        1 => {
            if let Ok(a) = parse_body::<api::PatchApp>(input) {
                let _ = a.quotas.map(|q| q.check());
            }
        }
        2 => drop(parse_body::<api::Overlap>(input)),
        3 => drop(parse_body::<api::MintUserSig>(input)),
        4 => drop(parse_body::<api::AddBlock>(input)),
        5 => {
            if let Ok(l) = parse_body::<api::Limits>(input) {
                let _ = l.check();
            }
        }
        6 => drop(parse_body::<api::CreateKey>(input)),
        7 => {
            if let Ok(r) = parse_body::<api::TRemoveUser>(input) {
                let _ = t_users(&r.user_ids);
            }
        }
        8 => {
            if let Ok(r) = parse_body::<api::TRemoveStrRoomUser>(input) {
                let _ = (t_str_room(&r.room_id), t_users(&r.user_ids));
            }
        }
        9 => {
            if let Ok(r) = parse_body::<api::TDismissStrRoom>(input) {
                let _ = t_str_room(&r.room_id);
            }
        }
        10 => drop(parse_body::<api::PrivateMapKeyRequest>(input)),
        11 => drop(text.map(parse_cidr)),
        12 => drop(text.map(|t| (path_sdkappid(t), path_room(t)))),
        13 => drop(text.map(|t| parse_query(Some(t), &["sdkappid", "limit", "since", "region"]))),
        14 => drop(text.map(control::tc3::parse_timestamp)),
        _ => drop(serde_json::from_slice::<relay::mgmt::Request>(input)),
    }
});
