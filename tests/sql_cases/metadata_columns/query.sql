CREATE STREAM clicks (page VARCHAR);
SELECT page, _topic, _partition, _offset, _key, _timestamp FROM clicks WHERE _offset >= 1;
