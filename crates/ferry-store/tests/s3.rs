//! The store primitives against a real S3-compatible server (moto on 127.0.0.1): the same
//! semantics the `file://` unit tests pin, so the agent and publisher can rely on them on
//! either backend — conditional GET, create-only and If-Match PUT, ranged reads, multipart
//! uploads, the conditional-PUT probe (and its verdict on a server that ignores conditions).

use bytes::Bytes;
use ferry_store::{
    ConditionalPut, CreateOutcome, Fetched, MULTIPART_THRESHOLD, NoProgress, Store, StoreOptions,
    SwapOutcome,
};
use ferry_testutil::s3::{ConditionStrippingProxy, S3Server};

fn open(server: &S3Server, endpoint: String, prefix: &str) -> Store {
    for (name, value) in server.environment() {
        // SAFETY: each test binary sets the same values before any store (and its threads)
        // exists; nothing reads the environment concurrently in a way that could race.
        unsafe { std::env::set_var(name, value) };
    }
    let options = StoreOptions {
        s3_endpoint: Some(endpoint),
        ..StoreOptions::default()
    };
    Store::open(&server.store_url(prefix), &options).expect("open store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primitives_behave_on_s3_as_on_a_directory() {
    let server = S3Server::start();
    let store = open(&server, server.endpoint(), "primitives");

    assert_eq!(
        store
            .put_create("a/b", Bytes::from_static(b"hello world"))
            .await
            .unwrap(),
        CreateOutcome::Created
    );
    assert_eq!(
        store
            .put_create("a/b", Bytes::from_static(b"other"))
            .await
            .unwrap(),
        CreateOutcome::AlreadyExists
    );

    let Fetched::Changed(object) = store.get_if_changed("a/b", None, 100).await.unwrap() else {
        panic!("expected the object")
    };
    assert_eq!(&object.bytes[..], b"hello world");
    let etag = object.etag.clone().expect("S3 gives an ETag");
    assert!(matches!(
        store.get_if_changed("a/b", Some(&etag), 100).await.unwrap(),
        Fetched::NotModified
    ));
    assert!(matches!(
        store.get_if_changed("a/none", None, 100).await.unwrap(),
        Fetched::Missing
    ));
    assert!(matches!(
        store.get("a/b", 4).await,
        Err(ferry_store::Error::TooLarge { .. })
    ));
    assert_eq!(&store.get_range("a/b", 6..11).await.unwrap()[..], b"world");

    assert_eq!(
        store
            .put_if_match("a/b", Bytes::from_static(b"x"), Some("\"stale\""))
            .await
            .unwrap(),
        SwapOutcome::Conflict
    );
    assert_eq!(
        store
            .put_if_match("a/b", Bytes::from_static(b"x"), None)
            .await
            .unwrap(),
        SwapOutcome::Conflict
    );
    assert!(matches!(
        store
            .put_if_match("a/b", Bytes::from_static(b"new"), Some(&etag))
            .await
            .unwrap(),
        SwapOutcome::Written(_)
    ));
    assert_eq!(
        store
            .put_if_match("a/b", Bytes::from_static(b"y"), Some(&etag))
            .await
            .unwrap(),
        SwapOutcome::Conflict
    );
    assert!(matches!(
        store.get_if_changed("a/b", Some(&etag), 100).await.unwrap(),
        Fetched::Changed(_)
    ));

    store
        .put_overwrite(
            &ferry_store::host_report_path("hello", "host-1"),
            b"{}".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(store.list("apps/hello/hosts").await.unwrap().len(), 1);

    let dir = ferry_testutil::Dir::new("s3-multipart");
    let data: Vec<u8> = (0..(MULTIPART_THRESHOLD as usize + 4321))
        .map(|index| (index % 253) as u8)
        .collect();
    let file = dir.write("big.deb", &data);
    store
        .upload_file("artifacts/big.deb", &file, &NoProgress)
        .await
        .unwrap();
    let stored = store
        .get("artifacts/big.deb", u64::MAX)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.bytes == data, "multipart upload changed the bytes");

    assert_eq!(
        store.check_conditional_put().await.unwrap(),
        ConditionalPut::Honoured
    );
    assert!(
        store
            .head(".ferry/conditional-put-ok")
            .await
            .unwrap()
            .is_some(),
        "verdict cached in the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_catches_a_server_that_ignores_conditional_puts() {
    let server = S3Server::start();
    let proxy = ConditionStrippingProxy::start(server.port());
    let store = open(&server, proxy.endpoint(), "ignoring");
    assert_eq!(
        store.check_conditional_put().await.unwrap(),
        ConditionalPut::Ignored
    );
    assert!(
        store
            .head(".ferry/conditional-put-ok")
            .await
            .unwrap()
            .is_none(),
        "a bad verdict is not cached"
    );
    // What the probe saw: a create-only write that overwrites.
    store
        .put_create("k", Bytes::from_static(b"1"))
        .await
        .unwrap();
    assert_eq!(
        store
            .put_create("k", Bytes::from_static(b"2"))
            .await
            .unwrap(),
        CreateOutcome::Created
    );
}
