use super::*;

fn at(locs: &Locations, path: &str) -> (usize, usize) {
    let loc = locs.find(path).unwrap_or_else(|| panic!("{path} not located in {:#?}", locs.map));
    (loc.line, loc.column)
}

#[test]
fn nested_maps_and_sequences() {
    let text = "\
admin:
  address: 127.0.0.1:9901
services:
  - name: web
    hosts:
      - web.local
    routes:
      - name: all
        backends:
          - name: web-v1
            weight: 9
          - name: web-v2
";
    let locs = Locations::index(text);
    assert_eq!(at(&locs, "admin"), (1, 1));
    assert_eq!(at(&locs, "admin.address"), (2, 3));
    assert_eq!(at(&locs, "services[0]"), (4, 3));
    assert_eq!(at(&locs, "services[0].name"), (4, 5));
    assert_eq!(at(&locs, "services[0].hosts[0]"), (6, 7));
    assert_eq!(at(&locs, "services[0].routes[0].name"), (8, 9));
    assert_eq!(at(&locs, "services[0].routes[0].backends[0].weight"), (11, 13));
    assert_eq!(at(&locs, "services[0].routes[0].backends[1].name"), (12, 13));
}

#[test]
fn sequences_at_the_parent_key_indentation() {
    let text = "listeners:\n- name: a\n  address: x\n- name: b\nbackends: []\n";
    let locs = Locations::index(text);
    assert_eq!(at(&locs, "listeners[1].name"), (4, 3));
    assert_eq!(at(&locs, "listeners[0].address"), (3, 3));
    assert_eq!(at(&locs, "backends"), (5, 1));
}

#[test]
fn comments_and_quotes() {
    let text = "\
# header: not a key
\"quoted key\": 1 # trailing: comment
'single': 'it''s # not a comment'
plain: \"a # b\"
services: # list follows
  # a comment between: items
  -   name: spaced
";
    let locs = Locations::index(text);
    assert_eq!(at(&locs, "quoted key"), (2, 1));
    assert_eq!(at(&locs, "single"), (3, 1));
    assert_eq!(at(&locs, "plain"), (4, 1));
    assert_eq!(at(&locs, "services[0]"), (7, 3));
    assert_eq!(at(&locs, "services[0].name"), (7, 7));
    assert!(!locs.map.contains_key("header"));
}

#[test]
fn block_scalars_and_multiline_values_are_skipped() {
    let text = "\
a: |
  b: not a key
  - not an item
c: >-
  d: no
e: plain
  continued: still the scalar
f: [x,
  g: y]
h: 1
";
    let locs = Locations::index(text);
    for key in ["a", "c", "e", "f"] {
        assert!(locs.map.contains_key(key), "{key}");
    }
    assert_eq!(at(&locs, "h"), (10, 1));
    assert_eq!(locs.map.len(), 5, "{:#?}", locs.map);
}

#[test]
fn flow_collections_fall_back_to_the_ancestor() {
    let locs = Locations::index("services:\n  - {name: a, hosts: [x]}\n");
    assert_eq!(at(&locs, "services[0].hosts[0]"), (2, 3));
    assert_eq!(at(&locs, "services[3].name"), (1, 1));
    assert!(locs.find("other").is_none());
}

#[test]
fn nested_sequence_items_and_dash_on_its_own_line() {
    let text = "m:\n  - - a\n    - b\n  -\n    k: v\n";
    let locs = Locations::index(text);
    assert_eq!(at(&locs, "m[0]"), (2, 3));
    assert_eq!(at(&locs, "m[0][1]"), (3, 5));
    assert_eq!(at(&locs, "m[1].k"), (5, 5));
}

#[test]
fn anchors_tags_and_document_markers() {
    let text = "---\nbase: &b\n  x: 1\nother: !!map\n  y: 2\n...\n";
    let locs = Locations::index(text);
    assert_eq!(at(&locs, "base.x"), (3, 3));
    assert_eq!(at(&locs, "other.y"), (5, 3));
}

#[test]
fn columns_count_characters() {
    let locs = Locations::index("\"é\": \n  k: 1\n");
    assert_eq!(at(&locs, "é.k"), (2, 3));
}
